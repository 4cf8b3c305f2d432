/* An LD_PRELOAD shim that makes fdatasync() and fsync() cost what a real disk's flush can cost:
 * SLOW_SYNC_MS milliseconds (default 2) before the real call. With it, bench/jobs.py shows
 * whether a spool's group commit works whatever the disk: with one sync per job, 16 clients
 * could get no more than 500 jobs a second acknowledged; with a sync covering every job waiting
 * for it, many more.
 *
 * Build: cc -O2 -shared -fPIC -o slow_sync.so slow_sync.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void pause_for_flush(void) {
  const char* text = getenv("SLOW_SYNC_MS");
  const long ms = text != NULL ? atol(text) : 2;
  struct timespec left = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&left, &left) != 0 && errno == EINTR) {
  }
}

int fdatasync(int fd) {
  static int (*real)(int) = NULL;
  if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
  pause_for_flush();
  return real(fd);
}

int fsync(int fd) {
  static int (*real)(int) = NULL;
  if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
  pause_for_flush();
  return real(fd);
}
