/* The floor of the comparison: the least a blocking accept-loop server of sockecho's protocol
 * can do, with no library around it. Each thread blocks in accept() on the shared socket, reads
 * until the client half-closes into a buffer it keeps (grown by doubling), writes prefix and
 * data with one writev(), and closes. No timeouts, no limits, no log: what is left is what the
 * kernel costs.
 *
 * Usage: floor HOST PORT THREADS [PREFIX]   (IPv4 HOST; PORT 0 picks a free one; THREADS 1 is
 * the strictly serial loop). Prints "listening on HOST:PORT" once ready.
 *        floor unix:PATH THREADS [PREFIX]    the same loop on a Unix-domain socket at PATH (which
 * must not exist yet; it is left behind). Prints "listening on unix:PATH" once ready. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

static int listener;
static const char* prefix = "\xe6\x95\xb0\xe6\x8d\xae\xe6\x98\xaf ";
static size_t prefix_len;

static void die(const char* what) {
  perror(what);
  exit(1);
}

static void* serve(void* unused) {
  (void)unused;
  char* buffer = NULL;
  size_t capacity = 0;
  for (;;) {
    int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      die("accept");
    }
    size_t size = 0;
    for (;;) {
      if (size == capacity) {
        capacity = capacity ? capacity * 2 : 65536;
        buffer = realloc(buffer, capacity);
        if (!buffer) die("realloc");
      }
      ssize_t n = recv(fd, buffer + size, capacity - size, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        if (n < 0) size = (size_t)-1;
        break;
      }
      size += (size_t)n;
    }
    if (size != (size_t)-1) {
      struct iovec iov[2] = {{(void*)prefix, prefix_len}, {buffer, size}};
      struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
      size_t left = prefix_len + size;
      while (left > 0) {
        ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        left -= (size_t)n;
        /* A partial write: step the iovecs past what went out. */
        while (n > 0 && msg.msg_iovlen > 0) {
          size_t step = (size_t)n < msg.msg_iov->iov_len ? (size_t)n : msg.msg_iov->iov_len;
          msg.msg_iov->iov_base = (char*)msg.msg_iov->iov_base + step;
          msg.msg_iov->iov_len -= step;
          n -= (ssize_t)step;
          if (msg.msg_iov->iov_len == 0) {
            msg.msg_iov++;
            msg.msg_iovlen--;
          }
        }
      }
    }
    close(fd);
  }
  return NULL;
}

/* Binds and listens on HOST PORT, or on unix:PATH, and prints the ready line. */
static void listen_on(const char* host, const char* port) {
  struct sockaddr_storage address = {0};
  socklen_t len;
  if (strncmp(host, "unix:", 5) == 0) {
    struct sockaddr_un* un = (struct sockaddr_un*)&address;
    un->sun_family = AF_UNIX;
    if (strlen(host + 5) >= sizeof un->sun_path) {
      fprintf(stderr, "floor: %s is too long for a Unix socket\n", host + 5);
      exit(2);
    }
    strcpy(un->sun_path, host + 5);
    len = sizeof *un;
  } else {
    struct sockaddr_in* in = (struct sockaddr_in*)&address;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)atoi(port));
    if (inet_pton(AF_INET, host, &in->sin_addr) != 1) {
      fprintf(stderr, "floor: %s is not an IPv4 address\n", host);
      exit(2);
    }
    len = sizeof *in;
  }
  listener = socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) die("socket");
  int on = 1;
  if (address.ss_family == AF_INET &&
      setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0)
    die("setsockopt");
  if (bind(listener, (struct sockaddr*)&address, len) != 0) die("bind");
  if (listen(listener, SOMAXCONN) != 0) die("listen");
  if (address.ss_family == AF_UNIX) {
    printf("listening on %s\n", host);
  } else {
    if (getsockname(listener, (struct sockaddr*)&address, &len) != 0) die("getsockname");
    printf("listening on %s:%u\n", host, (unsigned)ntohs(((struct sockaddr_in*)&address)->sin_port));
  }
  fflush(stdout);
}

int main(int argc, char** argv) {
  const int unix_form = argc >= 2 && strncmp(argv[1], "unix:", 5) == 0;
  const int first = unix_form ? 2 : 3; /* index of THREADS */
  if (argc < first + 1 || argc > first + 2) {
    fprintf(stderr, "usage: floor HOST PORT THREADS [PREFIX] | floor unix:PATH THREADS [PREFIX]\n");
    return 2;
  }
  int threads = atoi(argv[first]);
  if (threads < 1) threads = 1;
  if (argc == first + 2) prefix = argv[first + 1];
  prefix_len = strlen(prefix);
  listen_on(argv[1], unix_form ? NULL : argv[2]);

  for (int i = 1; i < threads; ++i) {
    pthread_t thread;
    if (pthread_create(&thread, NULL, serve, NULL) != 0) die("pthread_create");
  }
  serve(NULL);
  return 0;
}
