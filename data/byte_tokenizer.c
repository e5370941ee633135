/* data/byte_tokenizer.c — the byte-level tokenizer: ids 0..255 are bytes, 256 BOS, 257 EOS. It
 * needs no model file, so the quickstart and tests run on any text; tools/tokenize_text.py --byte
 * produces the same ids. */
#include <string.h>

#include "data.h"

size_t vnm_byte_encode(const void *text, size_t len, bool end_of_document, uint32_t *ids)
{
    const uint8_t *bytes = text;
    for (size_t i = 0; i < len; i++) ids[i] = bytes[i];
    if (end_of_document) ids[len] = VNM_BYTE_EOS;
    return len + end_of_document;
}

size_t vnm_byte_decode(const int32_t *ids, size_t n, bool show_special, char *text, size_t cap)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        char byte = (char)(uint8_t)ids[i];
        const char *piece = &byte;
        size_t m = 1;
        if (ids[i] < 0 || ids[i] > 255) {
            if (!show_special) continue;
            piece = ids[i] == VNM_BYTE_BOS ? "<bos>" : ids[i] == VNM_BYTE_EOS ? "<eos>" : "<unk>";
            m = strlen(piece);
        }
        /* like snprintf: copy what fits before the NUL, count everything */
        for (size_t k = 0; k < m; k++, len++)
            if (len + 1 < cap) text[len] = piece[k];
    }
    if (cap > 0) text[len < cap ? len : cap - 1] = 0;
    return len;
}
