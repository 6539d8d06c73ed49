/* lungedge serial link, protocol version 1: see lungedge_link.h and ../PROTOCOL.md. */
#include "lungedge_link.h"

/* Bitwise, no table: 1 KiB less flash; fast enough for a few hundred frames a second. */
static uint32_t crc32_update(uint32_t crc, uint8_t b)
{
    int bit;
    crc ^= b;
    for (bit = 0; bit < 8; ++bit) {
        crc = (crc & 1u) ? (crc >> 1) ^ 0xEDB88320u : crc >> 1;
    }
    return crc;
}

uint32_t le_crc32(const uint8_t *data, size_t len)
{
    uint32_t crc = 0xFFFFFFFFu;
    size_t i;
    for (i = 0; i < len; ++i) {
        crc = crc32_update(crc, data[i]);
    }
    return crc ^ 0xFFFFFFFFu;
}

/* COBS stuffing on the fly: bytes go straight to out, each block's code is patched in later. */
typedef struct {
    uint8_t *out;
    size_t cap;
    size_t pos;      /* next free byte */
    size_t code_pos; /* where the current block's code byte goes */
    uint8_t code;    /* 1 + bytes in the current block */
    uint32_t crc;
    int overflow;
} writer;

static void w_begin(writer *w, uint8_t *out, size_t cap)
{
    w->out = out;
    w->cap = cap;
    w->pos = 1;
    w->code_pos = 0;
    w->code = 1;
    w->crc = 0xFFFFFFFFu;
    w->overflow = cap < 2;
}

static void w_raw(writer *w, uint8_t b)
{
    if (w->overflow) {
        return;
    }
    if (b == 0) {
        w->out[w->code_pos] = w->code;
        w->code_pos = w->pos;
        w->code = 1;
    } else {
        w->out[w->pos] = b;
        w->code++;
    }
    w->pos++;
    if (w->code == 0xFFu) { /* a full block of 254 bytes: no zero follows it */
        w->out[w->code_pos] = w->code;
        w->code_pos = w->pos;
        w->code = 1;
        w->pos++;
    }
    if (w->pos >= w->cap) {
        w->overflow = 1;
    }
}

static void w_byte(writer *w, uint8_t b)
{
    w->crc = crc32_update(w->crc, b);
    w_raw(w, b);
}

static void w_u16(writer *w, uint16_t v)
{
    w_byte(w, (uint8_t)(v & 0xFFu));
    w_byte(w, (uint8_t)(v >> 8));
}

static void w_u32(writer *w, uint32_t v)
{
    w_u16(w, (uint16_t)(v & 0xFFFFu));
    w_u16(w, (uint16_t)(v >> 16));
}

static void w_header(writer *w, uint8_t type, uint16_t seq, uint16_t len)
{
    w_byte(w, LE_VERSION);
    w_byte(w, type);
    w_u16(w, seq);
    w_u16(w, len);
}

static size_t w_end(writer *w)
{
    uint32_t crc = w->crc ^ 0xFFFFFFFFu;
    int i;
    for (i = 0; i < 4; ++i) {
        w_raw(w, (uint8_t)((crc >> (8 * i)) & 0xFFu));
    }
    if (w->overflow || w->pos >= w->cap) {
        return 0;
    }
    w->out[w->code_pos] = w->code;
    w->out[w->pos++] = 0x00u;
    return w->pos;
}

size_t le_frame_encode(uint8_t type, uint16_t seq, const uint8_t *payload, uint16_t len,
                       uint8_t *out, size_t cap)
{
    writer w;
    uint16_t i;
    if (len > LE_MAX_PAYLOAD) {
        return 0;
    }
    w_begin(&w, out, cap);
    w_header(&w, type, seq, len);
    for (i = 0; i < len; ++i) {
        w_byte(&w, payload[i]);
    }
    return w_end(&w);
}

size_t le_audio_encode(uint16_t seq, uint8_t rate_code, uint8_t flags, uint32_t first_sample,
                       const int16_t *samples, uint16_t count, uint8_t *out, size_t cap)
{
    writer w;
    uint16_t i;
    if (count > LE_MAX_SAMPLES) {
        return 0;
    }
    w_begin(&w, out, cap);
    w_header(&w, LE_AUDIO, seq, (uint16_t)(LE_AUDIO_HEADER_SIZE + 2u * count));
    w_byte(&w, rate_code);
    w_byte(&w, flags);
    w_u16(&w, count);
    w_u32(&w, first_sample);
    for (i = 0; i < count; ++i) {
        w_u16(&w, (uint16_t)samples[i]); /* two's complement, little-endian */
    }
    return w_end(&w);
}

size_t le_ack_encode(uint16_t seq, uint16_t acked_seq, uint8_t acked_type, uint8_t status,
                     uint8_t *out, size_t cap)
{
    uint8_t p[4];
    p[0] = (uint8_t)(acked_seq & 0xFFu);
    p[1] = (uint8_t)(acked_seq >> 8);
    p[2] = acked_type;
    p[3] = status;
    return le_frame_encode(LE_ACK, seq, p, 4, out, cap);
}

size_t le_heartbeat_encode(uint16_t seq, uint32_t uptime_ms, uint8_t status, uint8_t fill,
                           uint8_t *out, size_t cap)
{
    uint8_t p[6];
    p[0] = (uint8_t)(uptime_ms & 0xFFu);
    p[1] = (uint8_t)((uptime_ms >> 8) & 0xFFu);
    p[2] = (uint8_t)((uptime_ms >> 16) & 0xFFu);
    p[3] = (uint8_t)(uptime_ms >> 24);
    p[4] = status;
    p[5] = fill;
    return le_frame_encode(LE_HEARTBEAT, seq, p, 6, out, cap);
}

void le_receiver_init(le_receiver *rx)
{
    rx->len = 0;
    rx->skipping = 0;
    rx->frames = 0;
    rx->bad_frames = 0;
    rx->overlong = 0;
}

/* Un-stuff rx->buf in place (decoding never makes data longer) and check the frame. */
static int finish(le_receiver *rx, le_frame *frame)
{
    size_t i = 0, n = 0, end, k;
    uint8_t code;
    uint16_t len;
    uint32_t crc;
    uint8_t *b = rx->buf;
    while (i < rx->len) {
        code = b[i];
        end = i + code;
        if (code == 0 || end > rx->len) {
            return 0;
        }
        for (k = i + 1; k < end; ++k) {
            b[n++] = b[k];
        }
        i = end;
        if (code != 0xFFu && i < rx->len) {
            b[n++] = 0;
        }
    }
    if (n < LE_HEADER_SIZE + LE_CRC_SIZE) {
        return 0;
    }
    crc = (uint32_t)b[n - 4] | ((uint32_t)b[n - 3] << 8) | ((uint32_t)b[n - 2] << 16) |
          ((uint32_t)b[n - 1] << 24);
    if (le_crc32(b, n - LE_CRC_SIZE) != crc || b[0] != LE_VERSION) {
        return 0;
    }
    len = (uint16_t)(b[4] | (b[5] << 8));
    if (len != n - LE_HEADER_SIZE - LE_CRC_SIZE || len > LE_RX_MAX_PAYLOAD) {
        return 0;
    }
    frame->type = b[1];
    frame->seq = (uint16_t)(b[2] | (b[3] << 8));
    frame->len = len;
    for (k = 0; k < len; ++k) {
        frame->payload[k] = b[LE_HEADER_SIZE + k];
    }
    return 1;
}

int le_receiver_feed(le_receiver *rx, uint8_t byte, le_frame *frame)
{
    int ok;
    if (byte != 0) {
        if (rx->skipping) {
            return 0;
        }
        if (rx->len == sizeof rx->buf) {
            rx->overlong++;
            rx->len = 0;
            rx->skipping = 1;
            return 0;
        }
        rx->buf[rx->len++] = byte;
        return 0;
    }
    if (rx->skipping || rx->len == 0) { /* end of an overlong run, or an empty frame */
        rx->skipping = 0;
        rx->len = 0;
        return 0;
    }
    ok = finish(rx, frame);
    rx->len = 0;
    if (ok) {
        rx->frames++;
    } else {
        rx->bad_frames++;
    }
    return ok;
}
