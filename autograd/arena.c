/* autograd/arena.c — bump allocation over large chunks; a reset keeps the memory, coalescing a
 * step that outgrew its first chunk into one chunk big enough for the next step. */
#include <stdlib.h>

#include "internal.h"

struct vnm_arena_chunk {
    vnm_arena_chunk *next;
    char *mem;
    size_t size, used;
};

static const size_t ALIGN = 64;

void vnm_arena_init(vnm_arena *a, const vnm_backend *be, size_t chunk_bytes)
{
    a->be = be;
    a->chunks = NULL;
    a->chunk_bytes = chunk_bytes;
    a->used = 0;
    a->high = 0;
}

static void *raw_alloc(const vnm_arena *a, size_t bytes)
{
    if (a->be) return a->be->alloc(bytes);
    return aligned_alloc(ALIGN, (bytes + ALIGN - 1) / ALIGN * ALIGN);
}

static void raw_free(const vnm_arena *a, void *p)
{
    if (a->be)
        a->be->free(p);
    else
        free(p);
}

static vnm_arena_chunk *chunk_new(vnm_arena *a, size_t size)
{
    vnm_arena_chunk *c = malloc(sizeof *c);
    if (!c) return NULL;
    c->mem = raw_alloc(a, size);
    if (!c->mem) {
        free(c);
        return NULL;
    }
    c->size = size;
    c->used = 0;
    c->next = a->chunks;
    a->chunks = c;
    return c;
}

void *vnm_arena_alloc(vnm_arena *a, size_t bytes)
{
    size_t need = (bytes + ALIGN - 1) / ALIGN * ALIGN;
    if (need == 0) need = ALIGN;
    vnm_arena_chunk *c = a->chunks;
    if (!c || c->size - c->used < need) {
        size_t size = need > a->chunk_bytes ? need : a->chunk_bytes;
        c = chunk_new(a, size);
        if (!c) return NULL;
    }
    void *p = c->mem + c->used;
    c->used += need;
    a->used += need;
    if (a->used > a->high) a->high = a->used;
    return p;
}

void vnm_arena_reset(vnm_arena *a)
{
    if (a->chunks && a->chunks->next) {
        size_t total = 0;
        for (vnm_arena_chunk *c = a->chunks; c; c = c->next) total += c->size;
        vnm_arena_release(a);
        if (total > a->chunk_bytes) a->chunk_bytes = total;
    }
    if (a->chunks) a->chunks->used = 0;
    a->used = 0;
}

void vnm_arena_release(vnm_arena *a)
{
    vnm_arena_chunk *c = a->chunks;
    while (c) {
        vnm_arena_chunk *next = c->next;
        raw_free(a, c->mem);
        free(c);
        c = next;
    }
    a->chunks = NULL;
    a->used = 0;
}
