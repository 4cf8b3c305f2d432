/* A load for sockecho-server's status listener (--status): each request is `status ID` on a new
 * connection (status requests are short-lived, like a PHP page's), half-closed, its one reply
 * line read to the server's close. A reply counts as answered when it is one line naming ID
 * ("queued id=ID ...", "running id=ID ...", ...); "unknown" and "error" replies, resets, refused
 * connections and 10 s without an answer are errors.
 *
 * Two modes:
 * - closed THREADS: THREADS clients, each sending its next request as soon as the last one is
 *   answered, for SECONDS. Latency: from connect() to the close that ends the reply.
 * - paced RATE [THREADS]: RATE requests a second in all, request i due at start + i / RATE (an
 *   absolute deadline, so a slow reply delays no later request; THREADS, default 32, take the due
 *   requests in turn). A request started more than 1 ms after its due time is "late". Latency is
 *   measured from the due time, so a late start counts in it (no coordinated omission). Requests
 *   still unsent one second after the schedule's end are given up ("missed"). The rate is the
 *   answered requests over the span from the start to the last request's start plus one
 *   interval: it is RATE only when the schedule was kept.
 *
 * Prints one JSON line: requests answered, errors, seconds, the rate, the latency at p50, p99 and
 * max in milliseconds, and in paced mode the target rate, late and missed requests and the
 * largest delay of a start.
 *
 * Usage: status_load PORT ID SECONDS closed THREADS
 *        status_load PORT ID SECONDS paced RATE [THREADS]      (127.0.0.1 only)
 * Build: cc -O2 -Wall -Wextra -pthread -o status_load status_load.c */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LATE_S 0.001     /* a paced request started later than this after its due time is late */
#define GRACE_S 1.0      /* paced requests not started this long after the schedule's end: missed */
#define TIMEOUT_MS 10000 /* no reply within this: an error */

static int port;
static const char* id;
static char request[128];
static size_t request_length;
static double seconds;
static double start;
static int paced;
static double rate;
static long scheduled;   /* paced: how many requests the schedule holds */
static atomic_long next; /* paced: the index of the next request to take */
static pthread_mutex_t first_error_lock = PTHREAD_MUTEX_INITIALIZER;
static char first_error[160];

struct worker {
  pthread_t thread;
  double* latencies; /* milliseconds of each answered request */
  size_t count;
  size_t capacity;
  size_t errors;
  size_t late;
  size_t missed;
  double max_late;   /* seconds */
  double last_start; /* paced: when this worker started its last request */
};

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void sleep_until(double when) {
  struct timespec t;
  t.tv_sec = (time_t)when;
  t.tv_nsec = (long)((when - (double)t.tv_sec) * 1e9);
  if (t.tv_nsec >= 1000000000L) t.tv_nsec = 999999999L;
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) == EINTR) {
  }
}

/* The first error of the run, kept for the JSON line. */
static void note_error(const char* what, int error) {
  pthread_mutex_lock(&first_error_lock);
  if (first_error[0] == '\0') {
    if (error != 0) {
      snprintf(first_error, sizeof first_error, "%s: %s", what, strerror(error));
    } else {
      snprintf(first_error, sizeof first_error, "%s", what);
    }
  }
  pthread_mutex_unlock(&first_error_lock);
}

/* Waits for fd to be ready for `events`; 0 when it is, -1 on an error or TIMEOUT_MS. */
static int wait_for(int fd, short events) {
  struct pollfd p = {.fd = fd, .events = events, .revents = 0};
  for (;;) {
    const int n = poll(&p, 1, TIMEOUT_MS);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) {
      errno = ETIMEDOUT;
      return -1;
    }
    return 0;
  }
}

static int open_connection(void) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    note_error("socket", errno);
    return -1;
  }
  struct sockaddr_in to;
  memset(&to, 0, sizeof to);
  to.sin_family = AF_INET;
  to.sin_port = htons((unsigned short)port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const int one = 1;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  const struct timeval timeout = {.tv_sec = TIMEOUT_MS / 1000, .tv_usec = 0};
  (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  if (connect(fd, (const struct sockaddr*)&to, sizeof to) != 0) {
    /* Interrupted, the connection goes on in the background: wait for its outcome. */
    int error = errno;
    if (error == EINTR || error == EINPROGRESS) {
      socklen_t length = sizeof error;
      if (wait_for(fd, POLLOUT) != 0) {
        error = errno;
      } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) {
        error = errno;
      }
    }
    if (error != 0) {
      note_error("connect", error);
      close(fd);
      return -1;
    }
  }
  return fd;
}

static int write_all(int fd, const char* data, size_t length) {
  while (length > 0) {
    const ssize_t n = send(fd, data, length, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      note_error("send", n < 0 ? errno : EPIPE);
      return -1;
    }
    data += n;
    length -= (size_t)n;
  }
  return 0;
}

/* Reads the reply to the server's close; 0 when it is one line "WORD id=ID ..." with a WORD
 * other than "unknown" and "error". */
static int read_reply(int fd) {
  char reply[512];
  size_t have = 0;
  for (;;) {
    if (have == sizeof reply - 1) {
      note_error("reply longer than 511 bytes", 0);
      return -1;
    }
    const ssize_t n = recv(fd, reply + have, sizeof reply - 1 - have, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      note_error("recv", errno == EAGAIN || errno == EWOULDBLOCK ? ETIMEDOUT : errno);
      return -1;
    }
    if (n == 0) break;
    have += (size_t)n;
  }
  reply[have] = '\0';
  const char* space = memchr(reply, ' ', have);
  const char* newline = memchr(reply, '\n', have);
  char expected[96];
  snprintf(expected, sizeof expected, " id=%s ", id);
  if (have == 0 || newline != reply + have - 1 || space == NULL ||
      strncmp(space, expected, strlen(expected)) != 0 || strncmp(reply, "unknown ", 8) == 0 ||
      strncmp(reply, "error ", 6) == 0) {
    /* The reply's start, for the JSON line: printable characters but quotes and backslashes. */
    char what[64] = "unexpected reply: ";
    size_t at = strlen(what);
    for (size_t i = 0; i < have && at < sizeof what - 1; ++i) {
      const char c = reply[i];
      what[at++] = c >= ' ' && c <= '~' && c != '"' && c != '\\' ? c : '.';
    }
    what[at] = '\0';
    note_error(have == 0 ? "empty reply" : what, 0);
    return -1;
  }
  return 0;
}

/* One request on a new connection; 0 when answered. */
static int ask(void) {
  const int fd = open_connection();
  if (fd < 0) return -1;
  int ok = write_all(fd, request, request_length) == 0;
  if (ok && shutdown(fd, SHUT_WR) != 0) {
    note_error("shutdown", errno);
    ok = 0;
  }
  ok = ok && read_reply(fd) == 0;
  close(fd);
  return ok ? 0 : -1;
}

static void record(struct worker* w, double ms) {
  if (w->count == w->capacity) {
    const size_t capacity = w->capacity ? w->capacity * 2 : 4096;
    double* grown = realloc(w->latencies, capacity * sizeof *grown);
    if (grown == NULL) return;
    w->latencies = grown;
    w->capacity = capacity;
  }
  w->latencies[w->count++] = ms;
}

static void* run_closed(void* arg) {
  struct worker* w = arg;
  while (now() - start < seconds) {
    const double t0 = now();
    if (ask() == 0) {
      record(w, (now() - t0) * 1000);
    } else {
      ++w->errors;
    }
  }
  return NULL;
}

static void* run_paced(void* arg) {
  struct worker* w = arg;
  for (;;) {
    const long i = atomic_fetch_add(&next, 1);
    if (i >= scheduled) break;
    const double due = start + (double)i / rate;
    sleep_until(due);
    const double t0 = now();
    if (t0 > start + seconds + GRACE_S) { /* too far behind: this one, and the rest, are given up */
      ++w->missed;
      continue;
    }
    const double late = t0 - due;
    if (late > LATE_S) ++w->late;
    if (late > w->max_late) w->max_late = late;
    w->last_start = t0;
    if (ask() == 0) {
      record(w, (now() - due) * 1000);
    } else {
      ++w->errors;
    }
  }
  return NULL;
}

static int by_value(const void* a, const void* b) {
  const double x = *(const double*)a;
  const double y = *(const double*)b;
  return (x > y) - (x < y);
}

static int usage(void) {
  fprintf(stderr,
          "usage: status_load PORT ID SECONDS closed THREADS\n"
          "       status_load PORT ID SECONDS paced RATE [THREADS]\n");
  return 2;
}

int main(int argc, char** argv) {
  if (argc < 6 || argc > 7) return usage();
  port = atoi(argv[1]);
  id = argv[2];
  seconds = atof(argv[3]);
  int threads = 32;
  if (strcmp(argv[4], "closed") == 0 && argc == 6) {
    threads = atoi(argv[5]);
  } else if (strcmp(argv[4], "paced") == 0) {
    paced = 1;
    rate = atof(argv[5]);
    if (argc == 7) threads = atoi(argv[6]);
  } else {
    return usage();
  }
  const size_t id_length = strlen(id);
  if (port <= 0 || port > 65535 || id_length == 0 || id_length > 64 || seconds <= 0 ||
      threads <= 0 || threads > 1024 || (paced && (rate <= 0 || rate * seconds > 1e8))) {
    fprintf(stderr, "status_load: bad arguments\n");
    return 2;
  }
  request_length = (size_t)snprintf(request, sizeof request, "status %s\n", id);
  if (paced) scheduled = (long)(rate * seconds + 0.5);

  struct worker* workers = calloc((size_t)threads, sizeof *workers);
  if (workers == NULL) return 1;
  start = now() + (paced ? 0.01 : 0); /* paced: every thread is waiting when the first is due */
  for (int i = 0; i < threads; ++i) {
    if (pthread_create(&workers[i].thread, NULL, paced ? run_paced : run_closed, &workers[i]) !=
        0) {
      fprintf(stderr, "status_load: no thread %d of %d\n", i + 1, threads);
      return 1;
    }
  }
  size_t total = 0, errors = 0, late = 0, missed = 0;
  double max_late = 0, last_start = start;
  for (int i = 0; i < threads; ++i) {
    pthread_join(workers[i].thread, NULL);
    total += workers[i].count;
    errors += workers[i].errors;
    late += workers[i].late;
    missed += workers[i].missed;
    if (workers[i].max_late > max_late) max_late = workers[i].max_late;
    if (workers[i].last_start > last_start) last_start = workers[i].last_start;
  }
  /* Closed: the whole run. Paced: the span the schedule took, which is SECONDS when kept. */
  const double elapsed = paced ? last_start - start + 1 / rate : now() - start;
  double* all = malloc((total ? total : 1) * sizeof *all);
  if (all == NULL) return 1;
  size_t at = 0;
  for (int i = 0; i < threads; ++i) {
    if (workers[i].count) memcpy(all + at, workers[i].latencies, workers[i].count * sizeof *all);
    at += workers[i].count;
    free(workers[i].latencies);
  }
  qsort(all, total, sizeof *all, by_value);
  const double p50 = total ? all[total / 2] : 0;
  const double p99 = total ? all[(size_t)((double)total * 0.99)] : 0;
  const double max = total ? all[total - 1] : 0;
  printf(
      "{\"mode\":\"%s\",\"threads\":%d,\"ok\":%zu,\"errors\":%zu,\"seconds\":%.3f,"
      "\"requests_per_s\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f",
      paced ? "paced" : "closed", threads, total, errors, elapsed, (double)total / elapsed, p50,
      p99, max);
  if (paced) {
    printf(
        ",\"target_per_s\":%.1f,\"scheduled\":%ld,\"late\":%zu,\"missed\":%zu,"
        "\"max_late_ms\":%.3f",
        rate, scheduled, late, missed, max_late * 1000);
  }
  /* The first error's text: from strerror or this file's own words, no quotes or backslashes. */
  printf(",\"first_error\":\"%s\"}\n", first_error);
  free(all);
  free(workers);
  return 0;
}
