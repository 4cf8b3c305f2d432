/* The UDP floor, and the load that measures it: the least a UDP echo of sockecho's protocol can
 * do, with no library around it.
 *
 *   floor_udp serve HOST PORT [PREFIX]
 *     one thread: recvfrom() into a 64 KiB buffer, sendmsg() of prefix and data back to the
 *     sender. No truncation check, no limits, no log. Prints "listening on udp:HOST:PORT".
 *   floor_udp load HOST PORT SOCKETS SECONDS SIZE
 *     SOCKETS connected sockets, each with one datagram of SIZE bytes in flight (closed loop:
 *     the next goes when the reply is back; a datagram lost is resent after 100 ms). Prints
 *     "datagrams=N seconds=S per_second=R lost=L".
 *
 * IPv4 HOST only. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static void die(const char* what) {
  perror(what);
  exit(1);
}

static struct sockaddr_in address_of(const char* host, const char* port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(port))};
  if (inet_pton(AF_INET, host, &a.sin_addr) != 1) die("inet_pton");
  return a;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static _Noreturn void serve(const char* host, const char* port, const char* prefix) {
  struct sockaddr_in a = address_of(host, port);
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  if (bind(fd, (struct sockaddr*)&a, sizeof a) != 0) die("bind");
  socklen_t len = sizeof a;
  if (getsockname(fd, (struct sockaddr*)&a, &len) != 0) die("getsockname");
  printf("listening on udp:%s:%u\n", host, ntohs(a.sin_port));
  fflush(stdout);
  static char buffer[65536];
  size_t prefix_len = strlen(prefix);
  for (;;) {
    struct sockaddr_storage peer;
    socklen_t peer_len = sizeof peer;
    ssize_t n = recvfrom(fd, buffer, sizeof buffer, 0, (struct sockaddr*)&peer, &peer_len);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("recvfrom");
    }
    struct iovec iov[2] = {{(void*)prefix, prefix_len}, {buffer, (size_t)n}};
    struct msghdr msg = {.msg_name = &peer, .msg_namelen = peer_len, .msg_iov = iov,
                         .msg_iovlen = 2};
    (void)sendmsg(fd, &msg, MSG_NOSIGNAL);
  }
}

static int load(const char* host, const char* port, int sockets, double seconds, size_t size) {
  struct sockaddr_in a = address_of(host, port);
  struct pollfd* fds = calloc((size_t)sockets, sizeof *fds);
  double* sent_at = calloc((size_t)sockets, sizeof *sent_at);
  char* payload = malloc(size + 1);
  static char reply[65536];
  if (!fds || !sent_at || !payload) die("calloc");
  memset(payload, 'x', size);
  for (int i = 0; i < sockets; ++i) {
    fds[i].fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    fds[i].events = POLLIN;
    if (fds[i].fd < 0 || connect(fds[i].fd, (struct sockaddr*)&a, sizeof a) != 0) die("connect");
  }
  const double start = now();
  const double end = start + seconds;
  for (int i = 0; i < sockets; ++i) {
    if (send(fds[i].fd, payload, size, 0) < 0) die("send");
    sent_at[i] = start;
  }
  unsigned long done = 0, lost = 0;
  for (double t = start; t < end; t = now()) {
    int ready = poll(fds, (nfds_t)sockets, 100);
    if (ready < 0 && errno != EINTR) die("poll");
    t = now();
    for (int i = 0; i < sockets; ++i) {
      if (fds[i].revents & POLLIN) {
        if (recv(fds[i].fd, reply, sizeof reply, 0) < 0) die("recv");
        ++done;
      } else if (t - sent_at[i] < 0.1) {
        continue;
      } else {
        ++lost;
      }
      if (send(fds[i].fd, payload, size, 0) < 0) die("send");
      sent_at[i] = t;
    }
  }
  const double took = now() - start;
  printf("datagrams=%lu seconds=%.3f per_second=%.0f lost=%lu\n", done, took, done / took, lost);
  return 0;
}

int main(int argc, char** argv) {
  if (argc >= 4 && strcmp(argv[1], "serve") == 0) {
    serve(argv[2], argv[3], argc > 4 ? argv[4] : "\xe6\x95\xb0\xe6\x8d\xae\xe6\x98\xaf ");
  }
  if (argc == 7 && strcmp(argv[1], "load") == 0) {
    return load(argv[2], argv[3], atoi(argv[4]), atof(argv[5]), (size_t)atol(argv[6]));
  }
  fprintf(stderr, "usage: floor_udp serve HOST PORT [PREFIX] | load HOST PORT SOCKETS SECONDS SIZE\n");
  return 2;
}
