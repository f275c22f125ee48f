/* The stateful program of scripts/spike/criu-cri.sh: fills SPIKE_MIB MiB (default 256) with a
 * pseudo-random pattern (the "load", stretched by SPIKE_LOAD_MS of sleep to stand for reading
 * weights and warming up), then counts forever, one line a tick, each line with the
 * checksum of the whole buffer recomputed that tick. After a restore the count goes on from where
 * it was and the checksum is unchanged; a cold start begins again at count=1.
 * Built static (gcc -static) so that the image needs nothing else. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t checksum(const uint64_t *buf, size_t words) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < words; i++) {
        h ^= buf[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static void say(const char *line) {
    /* One write per line: stdout is a pipe to the shim, and stdio would buffer. */
    size_t n = strlen(line);
    while (n > 0) {
        ssize_t w = write(1, line, n);
        if (w <= 0) return;
        line += w;
        n -= (size_t)w;
    }
}

int main(void) {
    const char *mib_s = getenv("SPIKE_MIB");
    const char *tick_s = getenv("SPIKE_TICK_MS");
    size_t mib = mib_s ? strtoul(mib_s, NULL, 10) : 256;
    long tick_ms = tick_s ? strtol(tick_s, NULL, 10) : 200;
    size_t words = mib * 1024 * 1024 / sizeof(uint64_t);
    uint64_t *buf = malloc(words * sizeof(uint64_t));
    char line[160];
    if (buf == NULL) {
        say("malloc failed\n");
        return 1;
    }
    uint64_t x = 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid() ^ (uint64_t)time(NULL);
    for (size_t i = 0; i < words; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = x;
    }
    /* SPIKE_LOAD_MS: the rest of a slow "load" (weights read, warm-up), slept before "loaded". */
    const char *load_s = getenv("SPIKE_LOAD_MS");
    long load_ms = load_s ? strtol(load_s, NULL, 10) : 0;
    if (load_ms > 0) {
        struct timespec lt = {load_ms / 1000, (load_ms % 1000) * 1000000L};
        nanosleep(&lt, NULL);
    }
    uint64_t sum = checksum(buf, words);
    snprintf(line, sizeof line, "loaded mib=%zu sum=%016llx pid=%d\n", mib,
             (unsigned long long)sum, (int)getpid());
    say(line);
    struct timespec ts = {tick_ms / 1000, (tick_ms % 1000) * 1000000L};
    for (unsigned long count = 1;; count++) {
        sum = checksum(buf, words);
        snprintf(line, sizeof line, "count=%lu sum=%016llx\n", count, (unsigned long long)sum);
        say(line);
        nanosleep(&ts, NULL);
    }
}
