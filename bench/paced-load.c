// Fixed-rate HTTP/1.1 load for the latency-at-half-load measurement of bench/compare.ts, the native
// twin of the Node pacer in bench/paced-load.ts (which runs it when a C compiler is present).
//
// Why native: Node's timers fire on a 1 ms grid, so the Node pacer sends each millisecond's
// requests as one burst (about 20 at once at half load), and a proxy answers the last of a burst
// only after the others; its own event loop also shares the client core with the backends and
// falls behind. This one arms a timerfd for every request's own slot (microsecond pacing), waits in
// epoll, and costs a few microseconds of CPU per request.
//
//   cc -O2 -o paced-load bench/paced-load.c
//   ./paced-load HOST PORT PATH RATE CONNECTIONS SECONDS
//
// Open loop over a pool of keep-alive connections: request i is due at start + i / RATE and leaves
// then on an idle connection (or as soon as one is free, counted late past 2 ms). Each latency is
// from the request's write to the last byte of its response. Responses must carry Content-Length.
// Prints one JSON line with the fields of PacedResult (bench/paced-load.ts).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define LATE_NS 2000000ULL
#define DRAIN_NS 2000000000ULL
#define HEAD_MAX 16384

struct connection {
  int fd;
  int busy;
  uint64_t sent_at;
  /* Body bytes still expected, or -1 while the response head is incomplete. */
  long long body_left;
  int status;
  size_t head_len;
  char head[HEAD_MAX];
};

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int compare_doubles(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double percentile(const double *sorted, size_t n, double p) {
  if (n == 0) return 0;
  size_t rank = (size_t)((p / 100.0) * (double)n + 0.999999999);
  if (rank < 1) rank = 1;
  if (rank > n) rank = n;
  return sorted[rank - 1];
}

static int open_connection(const struct addrinfo *address) {
  int fd = socket(address->ai_family, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  if (connect(fd, address->ai_addr, address->ai_addrlen) != 0) {
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  /* Non-blocking from here: the loop never waits on one socket. */
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

/* Status and Content-Length from a complete head; -1 when there is no Content-Length. */
static long long parse_head(const char *head, size_t length, int *status) {
  *status = length > 12 ? atoi(head + 9) : 0;
  const char *p = head;
  const char *end = head + length;
  while (p < end) {
    const char *line = memmem(p, (size_t)(end - p), "\r\n", 2);
    if (line == NULL) break;
    p = line + 2;
    if ((size_t)(end - p) > 15 && strncasecmp(p, "content-length:", 15) == 0) return atoll(p + 15);
  }
  return -1;
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: paced-load HOST PORT PATH RATE CONNECTIONS SECONDS\n");
    return 2;
  }
  const char *host = argv[1];
  const char *port = argv[2];
  const char *path = argv[3];
  double rate = atof(argv[4]);
  int connection_count = atoi(argv[5]);
  double seconds = atof(argv[6]);
  if (rate <= 0 || connection_count <= 0 || seconds <= 0) {
    fprintf(stderr, "paced-load: RATE, CONNECTIONS and SECONDS must be positive\n");
    return 2;
  }

  struct addrinfo hints = {0}, *address;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(host, port, &hints, &address) != 0) {
    fprintf(stderr, "paced-load: cannot resolve %s:%s\n", host, port);
    return 1;
  }
  char request[1024];
  int request_len = snprintf(request, sizeof request, "GET %s HTTP/1.1\r\nHost: %s:%s\r\n\r\n", path, host, port);

  size_t planned = (size_t)(rate * seconds + 0.5);
  double *latencies_ms = malloc(planned * sizeof *latencies_ms);
  struct connection *connections = calloc((size_t)connection_count, sizeof *connections);
  int *idle = malloc((size_t)connection_count * sizeof *idle);
  int idle_count = 0;
  int epoll = epoll_create1(0);
  int timer = timerfd_create(CLOCK_MONOTONIC, 0);
  if (latencies_ms == NULL || connections == NULL || idle == NULL || epoll < 0 || timer < 0) {
    perror("paced-load");
    return 1;
  }
  struct epoll_event event = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
  epoll_ctl(epoll, EPOLL_CTL_ADD, timer, &event);
  for (int i = 0; i < connection_count; i++) {
    struct connection *c = &connections[i];
    c->fd = open_connection(address);
    if (c->fd < 0) {
      fprintf(stderr, "paced-load: cannot connect to %s:%s: %s\n", host, port, strerror(errno));
      return 1;
    }
    c->body_left = -1;
    event.data.u32 = (uint32_t)i;
    epoll_ctl(epoll, EPOLL_CTL_ADD, c->fd, &event);
    idle[idle_count++] = i;
  }

  size_t sent = 0, completed = 0, errors = 0, non2xx = 0, late = 0;
  double interval_ns = 1e9 / rate;
  uint64_t start = now_ns();
  uint64_t deadline = start + (uint64_t)(seconds * 1e9) + DRAIN_NS;
  static char scratch[65536];
  struct epoll_event events[256];

  for (;;) {
    /* Send everything due, then arm the timer for the next slot. */
    uint64_t now = now_ns();
    size_t due = (size_t)((double)(now - start) / interval_ns) + 1;
    if (due > planned) due = planned;
    while (sent < due && idle_count > 0) {
      uint64_t slot = start + (uint64_t)((double)sent * interval_ns);
      if (now - slot > LATE_NS) late++;
      struct connection *c = &connections[idle[--idle_count]];
      c->busy = 1;
      c->sent_at = now_ns();
      if (write(c->fd, request, (size_t)request_len) != request_len) {
        /* A write that does not go out at once on an idle keep-alive socket: the server closed it. */
        errors++;
        c->busy = 0;
      }
      sent++;
    }
    if (completed + errors >= planned || now >= deadline) break;
    if (sent < planned) {
      uint64_t next = start + (uint64_t)((double)sent * interval_ns);
      struct itimerspec when = {.it_value = {.tv_sec = (time_t)(next / 1000000000ULL), .tv_nsec = (long)(next % 1000000000ULL)}};
      if (when.it_value.tv_sec == 0 && when.it_value.tv_nsec == 0) when.it_value.tv_nsec = 1;
      timerfd_settime(timer, TFD_TIMER_ABSTIME, &when, NULL);
    }
    int timeout_ms = sent < planned ? -1 : (int)((deadline - now) / 1000000ULL) + 1;
    int ready = epoll_wait(epoll, events, 256, timeout_ms);
    if (ready < 0 && errno != EINTR) {
      perror("paced-load: epoll_wait");
      return 1;
    }
    for (int e = 0; e < ready; e++) {
      uint32_t index = events[e].data.u32;
      if (index == UINT32_MAX) {
        uint64_t expirations;
        (void)!read(timer, &expirations, sizeof expirations);
        continue;
      }
      struct connection *c = &connections[index];
      ssize_t n = read(c->fd, scratch, sizeof scratch);
      if (n <= 0) {
        if (n < 0 && errno == EAGAIN) continue;
        /* Closed or failed: its request (if any) is an error, and the connection leaves the pool. */
        if (c->busy) errors++;
        epoll_ctl(epoll, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->busy = 0;
        continue;
      }
      if (!c->busy) continue;
      size_t body_bytes = (size_t)n;
      if (c->body_left < 0) {
        size_t take = (size_t)n < HEAD_MAX - c->head_len ? (size_t)n : HEAD_MAX - c->head_len;
        memcpy(c->head + c->head_len, scratch, take);
        size_t searched_from = c->head_len > 3 ? c->head_len - 3 : 0;
        c->head_len += take;
        char *end = memmem(c->head + searched_from, c->head_len - searched_from, "\r\n\r\n", 4);
        if (end == NULL) {
          if (c->head_len == HEAD_MAX) { /* no head this large is worth waiting for */
            errors++;
            c->busy = 0;
          }
          continue;
        }
        size_t head_length = (size_t)(end - c->head) + 4;
        long long content_length = parse_head(c->head, head_length - 2, &c->status);
        if (content_length < 0) {
          errors++;
          c->busy = 0;
          continue;
        }
        /* Bytes of this read past the head belong to the body. */
        body_bytes = (size_t)n - (head_length - (c->head_len - take));
        c->body_left = content_length;
      }
      c->body_left -= (long long)body_bytes;
      if (c->body_left > 0) continue;
      uint64_t latency = now_ns() - c->sent_at;
      if (c->status < 200 || c->status >= 400) non2xx++;
      if (completed < planned) latencies_ms[completed++] = (double)latency / 1e6;
      c->busy = 0;
      c->body_left = -1;
      c->head_len = 0;
      idle[idle_count++] = (int)index;
    }
  }

  double elapsed = (double)(now_ns() - start) / 1e9;
  qsort(latencies_ms, completed, sizeof *latencies_ms, compare_doubles);
  size_t unanswered = sent > completed + errors ? sent - completed - errors : 0;
  printf("{\"targetRate\":%.0f,\"requestsPerSec\":%.0f,\"requests\":%zu,\"p50Ms\":%.3f,\"p90Ms\":%.3f,"
         "\"p99Ms\":%.3f,\"p999Ms\":%.3f,\"maxMs\":%.3f,\"errors\":%zu,\"non2xx\":%zu,\"lateRequests\":%zu}\n",
         rate, (double)completed / elapsed, completed, percentile(latencies_ms, completed, 50),
         percentile(latencies_ms, completed, 90), percentile(latencies_ms, completed, 99),
         percentile(latencies_ms, completed, 99.9), completed ? latencies_ms[completed - 1] : 0.0,
         errors + unanswered, non2xx, late + (planned - sent));
  return 0;
}
