/* A heap checker for tritonserver, preloaded by tests/test_lifecycle.py (LD_PRELOAD).
 *
 * glibc checks a free list's consistency when it walks it. mallinfo2() walks every arena's bins
 * and fastbins under the arena lock, so a thread calling it in a loop notices a corrupted free
 * list (a write to freed memory, a double free) within microseconds of the damage instead of
 * minutes later, and aborts with glibc's message ("unaligned fastbin chunk detected", "corrupted
 * double-linked list"). The test sees the abort in the server's log and fails with it.
 *
 * ONNXRS_HEAPCHECK_INTERVAL_US sets the pause between walks (default 500 microseconds). */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

static volatile size_t sink;

static void *walk(void *arg) {
  long us = (long)(size_t)arg;
  struct timespec pause = {us / 1000000, (us % 1000000) * 1000};
  for (;;) {
    struct mallinfo2 m = mallinfo2();
    sink = m.uordblks + m.fordblks;
    nanosleep(&pause, NULL);
  }
  return NULL;
}

__attribute__((constructor)) static void start_walker(void) {
  const char *v = getenv("ONNXRS_HEAPCHECK_INTERVAL_US");
  long us = v ? atol(v) : 500;
  if (us <= 0) us = 500;
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_create(&t, &attr, walk, (void *)(size_t)us);
  pthread_attr_destroy(&attr);
}
