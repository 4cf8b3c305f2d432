/* A closed-loop load for beanstalkd: THREADS clients each put SIZE-byte jobs as fast as they are
 * acknowledged ("INSERTED id"), for SECONDS, either on a new connection per job ("conn", what a
 * PHP page does with sockecho) or over one kept connection per client ("kept", beanstalkd's
 * normal use). Prints one JSON line: jobs acknowledged, errors, the rate, and the latency of each
 * put (connect included in "conn" mode) at p50, p99 and max, in milliseconds.
 *
 * Usage: beanstalk_load PORT THREADS SECONDS SIZE conn|kept   (127.0.0.1 only) */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int port;
static int kept;
static size_t size;
static double seconds;
static double start;

struct worker {
  pthread_t thread;
  double* latencies; /* milliseconds of each acknowledged put */
  size_t count;
  size_t capacity;
  size_t errors;
};

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int open_connection(void) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_in to;
  memset(&to, 0, sizeof to);
  to.sin_family = AF_INET;
  to.sin_port = htons((unsigned short)port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const int one = 1;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (const struct sockaddr*)&to, sizeof to) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static int write_all(int fd, const char* data, size_t length) {
  while (length > 0) {
    const ssize_t n = send(fd, data, length, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    data += n;
    length -= (size_t)n;
  }
  return 0;
}

/* Reads one reply line (up to "\r\n"); 0 when it is "INSERTED ...". */
static int read_inserted(int fd) {
  char line[128];
  size_t have = 0;
  while (have < sizeof line - 1) {
    const ssize_t n = recv(fd, line + have, sizeof line - 1 - have, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    have += (size_t)n;
    line[have] = '\0';
    if (strstr(line, "\r\n") != NULL) return strncmp(line, "INSERTED ", 9) == 0 ? 0 : -1;
  }
  return -1;
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

static void* run(void* arg) {
  struct worker* w = arg;
  char header[64];
  const int header_length = snprintf(header, sizeof header, "put 0 0 60 %zu\r\n", size);
  char* message = malloc((size_t)header_length + size + 2);
  if (message == NULL) return NULL;
  memcpy(message, header, (size_t)header_length);
  memset(message + header_length, 'j', size);
  memcpy(message + header_length + size, "\r\n", 2);
  const size_t length = (size_t)header_length + size + 2;
  int fd = -1;
  while (now() - start < seconds) {
    const double t0 = now();
    if (fd < 0) fd = open_connection();
    const int ok = fd >= 0 && write_all(fd, message, length) == 0 && read_inserted(fd) == 0;
    if (ok) {
      record(w, (now() - t0) * 1000);
    } else {
      ++w->errors;
    }
    if (!ok || !kept) {
      if (fd >= 0) close(fd);
      fd = -1;
    }
  }
  if (fd >= 0) close(fd);
  free(message);
  return NULL;
}

static int by_value(const void* a, const void* b) {
  const double x = *(const double*)a;
  const double y = *(const double*)b;
  return (x > y) - (x < y);
}

int main(int argc, char** argv) {
  if (argc != 6 || (strcmp(argv[5], "conn") != 0 && strcmp(argv[5], "kept") != 0)) {
    fprintf(stderr, "usage: beanstalk_load PORT THREADS SECONDS SIZE conn|kept\n");
    return 2;
  }
  port = atoi(argv[1]);
  const int threads = atoi(argv[2]);
  seconds = atof(argv[3]);
  size = (size_t)atol(argv[4]);
  kept = strcmp(argv[5], "kept") == 0;
  if (port <= 0 || threads <= 0 || threads > 1024 || seconds <= 0) {
    fprintf(stderr, "beanstalk_load: bad arguments\n");
    return 2;
  }
  struct worker* workers = calloc((size_t)threads, sizeof *workers);
  if (workers == NULL) return 1;
  start = now();
  for (int i = 0; i < threads; ++i) {
    if (pthread_create(&workers[i].thread, NULL, run, &workers[i]) != 0) return 1;
  }
  size_t total = 0;
  size_t errors = 0;
  for (int i = 0; i < threads; ++i) {
    pthread_join(workers[i].thread, NULL);
    total += workers[i].count;
    errors += workers[i].errors;
  }
  const double elapsed = now() - start;
  double* all = malloc((total ? total : 1) * sizeof *all);
  if (all == NULL) return 1;
  size_t at = 0;
  for (int i = 0; i < threads; ++i) {
    memcpy(all + at, workers[i].latencies, workers[i].count * sizeof *all);
    at += workers[i].count;
    free(workers[i].latencies);
  }
  qsort(all, total, sizeof *all, by_value);
  const double p50 = total ? all[total / 2] : 0;
  const double p99 = total ? all[(size_t)((double)total * 0.99)] : 0;
  const double max = total ? all[total - 1] : 0;
  printf("{\"ok\":%zu,\"errors\":%zu,\"seconds\":%.3f,\"requests_per_s\":%.1f,"
         "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f}\n",
         total, errors, elapsed, (double)total / elapsed, p50, p99, max);
  free(all);
  free(workers);
  return 0;
}
