/*
 * lungedge serial link, protocol version 1: the firmware side (see ../PROTOCOL.md).
 *
 * Portable C99, no malloc, no globals: the caller owns every buffer. Drop lungedge_link.c and
 * this header into an MCU project; frames are written straight into a caller's buffer, with the
 * COBS stuffing and the CRC computed on the fly, so no second copy of the frame is needed.
 */
#ifndef LUNGEDGE_LINK_H
#define LUNGEDGE_LINK_H

#include <stddef.h>
#include <stdint.h>

#define LE_VERSION 1u
#define LE_HEADER_SIZE 6u
#define LE_CRC_SIZE 4u
#define LE_MAX_PAYLOAD 1024u
#define LE_MAX_BODY (LE_HEADER_SIZE + LE_MAX_PAYLOAD + LE_CRC_SIZE)
/* COBS adds one byte per 254 and one more; the wire adds the 0x00 delimiter. */
#define LE_MAX_WIRE(payload) \
    ((LE_HEADER_SIZE + (payload) + LE_CRC_SIZE) + (LE_HEADER_SIZE + (payload) + LE_CRC_SIZE) / 254u + 2u)
#define LE_AUDIO_HEADER_SIZE 8u
#define LE_MAX_SAMPLES ((LE_MAX_PAYLOAD - LE_AUDIO_HEADER_SIZE) / 2u)

/* Host commands are small; a receiver holds at most one encoded command of this payload. */
#ifndef LE_RX_MAX_PAYLOAD
#define LE_RX_MAX_PAYLOAD 16u
#endif

enum le_frame_type {
    LE_AUDIO = 0x01, LE_HEARTBEAT = 0x02, LE_INFO = 0x03, LE_ERROR = 0x04, LE_ACK = 0x05,
    LE_START = 0x81, LE_STOP = 0x82, LE_SET_GAIN = 0x83, LE_SET_RATE = 0x84, LE_ALERT = 0x85
};

enum le_rate_code {
    LE_RATE_4000 = 0, LE_RATE_8000 = 1, LE_RATE_16000 = 2, LE_RATE_22050 = 3,
    LE_RATE_44100 = 4, LE_RATE_48000 = 5
};

enum le_ack_status { LE_ACK_OK = 0, LE_ACK_BAD_PARAMETER = 1, LE_ACK_UNSUPPORTED = 2,
                     LE_ACK_BUSY = 3 };

/* CRC-32 (IEEE 802.3, as zlib): reflected poly 0xEDB88320, init and final xor 0xFFFFFFFF. */
uint32_t le_crc32(const uint8_t *data, size_t len);

/*
 * Encoders: write one whole frame (COBS-stuffed, 0x00-terminated) into out and return its
 * length, or 0 if it does not fit in cap bytes (nothing usable is written then).
 */
size_t le_frame_encode(uint8_t type, uint16_t seq, const uint8_t *payload, uint16_t len,
                       uint8_t *out, size_t cap);
size_t le_audio_encode(uint16_t seq, uint8_t rate_code, uint8_t flags, uint32_t first_sample,
                       const int16_t *samples, uint16_t count, uint8_t *out, size_t cap);
size_t le_ack_encode(uint16_t seq, uint16_t acked_seq, uint8_t acked_type, uint8_t status,
                     uint8_t *out, size_t cap);
size_t le_heartbeat_encode(uint16_t seq, uint32_t uptime_ms, uint8_t status, uint8_t fill,
                           uint8_t *out, size_t cap);

/* One received, checked frame. */
typedef struct {
    uint8_t type;
    uint16_t seq;
    uint16_t len;
    uint8_t payload[LE_RX_MAX_PAYLOAD];
} le_frame;

/* Receiver of host commands: feed it bytes as they arrive, in any chunking. */
typedef struct {
    uint8_t buf[LE_MAX_WIRE(LE_RX_MAX_PAYLOAD)];
    size_t len;
    uint8_t skipping; /* inside an overlong run: drop until the next 0x00 */
    uint32_t frames;
    uint32_t bad_frames; /* failed COBS, CRC, version, length or size checks */
    uint32_t overlong;
} le_receiver;

void le_receiver_init(le_receiver *rx);
/* Returns 1 and fills *frame when byte completes a valid frame, else 0. */
int le_receiver_feed(le_receiver *rx, uint8_t byte, le_frame *frame);

#endif
