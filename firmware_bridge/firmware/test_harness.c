/*
 * Host-side harness for the tests: drives the firmware code from the command line so Python can
 * compare bytes.  Usage (all numbers decimal, bytes as hex strings):
 *   test_harness frame TYPE SEQ PAYLOADHEX      -> wire bytes as hex
 *   test_harness audio SEQ RATE FLAGS FIRST S…  -> wire bytes as hex
 *   test_harness ack SEQ ACKED_SEQ TYPE STATUS  -> wire bytes as hex
 *   test_harness heartbeat SEQ UPTIME STATUS FILL
 *   test_harness crc HEX                        -> CRC as 4 hex digits
 *   test_harness receive HEX                    -> one line per valid frame, then counters
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lungedge_link.h"

static uint8_t wire[LE_MAX_WIRE(LE_MAX_PAYLOAD)];

static size_t unhex(const char *s, uint8_t *out, size_t cap)
{
    size_t n = strlen(s) / 2, i;
    unsigned v;
    if (n > cap) {
        n = cap;
    }
    for (i = 0; i < n; ++i) {
        sscanf(s + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
    return n;
}

static int print_hex(const uint8_t *b, size_t n)
{
    size_t i;
    if (n == 0) {
        puts("ERROR");
        return 1;
    }
    for (i = 0; i < n; ++i) {
        printf("%02x", b[i]);
    }
    putchar('\n');
    return 0;
}

int main(int argc, char **argv)
{
    static uint8_t buf[1 << 20];
    static int16_t samples[LE_MAX_SAMPLES];
    if (argc >= 5 && strcmp(argv[1], "frame") == 0) {
        size_t n = unhex(argv[4], buf, sizeof buf);
        return print_hex(wire, le_frame_encode((uint8_t)atoi(argv[2]), (uint16_t)atoi(argv[3]),
                                               buf, (uint16_t)n, wire, sizeof wire));
    }
    if (argc >= 6 && strcmp(argv[1], "audio") == 0) {
        int i, count = argc - 6;
        if (count > (int)LE_MAX_SAMPLES) {
            count = (int)LE_MAX_SAMPLES + 1; /* let the encoder refuse it */
        }
        for (i = 0; i < count && i < (int)LE_MAX_SAMPLES; ++i) {
            samples[i] = (int16_t)atoi(argv[6 + i]);
        }
        return print_hex(wire, le_audio_encode((uint16_t)atoi(argv[2]), (uint8_t)atoi(argv[3]),
                                               (uint8_t)atoi(argv[4]),
                                               (uint32_t)strtoul(argv[5], NULL, 10), samples,
                                               (uint16_t)count, wire, sizeof wire));
    }
    if (argc == 6 && strcmp(argv[1], "ack") == 0) {
        return print_hex(wire, le_ack_encode((uint16_t)atoi(argv[2]), (uint16_t)atoi(argv[3]),
                                             (uint8_t)atoi(argv[4]), (uint8_t)atoi(argv[5]),
                                             wire, sizeof wire));
    }
    if (argc == 6 && strcmp(argv[1], "heartbeat") == 0) {
        return print_hex(wire, le_heartbeat_encode((uint16_t)atoi(argv[2]),
                                                   (uint32_t)strtoul(argv[3], NULL, 10),
                                                   (uint8_t)atoi(argv[4]),
                                                   (uint8_t)atoi(argv[5]), wire, sizeof wire));
    }
    if (argc == 3 && strcmp(argv[1], "crc") == 0) {
        size_t n = unhex(argv[2], buf, sizeof buf);
        printf("%08lx\n", (unsigned long)le_crc32(buf, n));
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "receive") == 0) {
        le_receiver rx;
        le_frame f;
        size_t n = unhex(argv[2], buf, sizeof buf), i, k;
        le_receiver_init(&rx);
        for (i = 0; i < n; ++i) {
            if (le_receiver_feed(&rx, buf[i], &f)) {
                printf("frame %u %u ", f.type, f.seq);
                for (k = 0; k < f.len; ++k) {
                    printf("%02x", f.payload[k]);
                }
                putchar('\n');
            }
        }
        printf("counters %lu %lu %lu\n", (unsigned long)rx.frames, (unsigned long)rx.bad_frames,
               (unsigned long)rx.overlong);
        return 0;
    }
    fputs("usage: see the comment at the top of test_harness.c\n", stderr);
    return 2;
}
