/* autograd/arena.c — bump allocation over large chunks; a reset keeps the memory, coalescing a
 * step that outgrew its first chunk into one chunk big enough for the next step. Freed blocks wait
 * in per-size stacks (a hash table on the host keyed by the rounded size) for a request of the
 * same size. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "internal.h"

typedef struct {
    size_t size; /* 0: an empty slot */
    void **ptrs;
    int64_t count, cap;
} free_slot;

struct vnm_arena_free_list {
    free_slot *slots;
    size_t cap; /* a power of two */
    size_t n;   /* sizes present */
};

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
    a->free = NULL;
    const char *p = getenv("VNM_POISON_FREED");
    a->poison = be && p && p[0] == '1';
}

static size_t rounded(size_t bytes)
{
    size_t need = (bytes + ALIGN - 1) / ALIGN * ALIGN;
    return need ? need : ALIGN;
}

/* The slot of `size` (empty if absent) in a table with room. */
static free_slot *slot_of(free_slot *slots, size_t cap, size_t size)
{
    size_t h = (size / ALIGN * 0x9E3779B97F4A7C15ull) & (cap - 1);
    while (slots[h].size && slots[h].size != size) h = (h + 1) & (cap - 1);
    return &slots[h];
}

/* Room for one more size: the table at most half full. */
static bool free_list_room(vnm_arena *a)
{
    vnm_arena_free_list *f = a->free;
    if (!f && !(f = a->free = calloc(1, sizeof *f))) return false;
    if (f->cap && 2 * (f->n + 1) <= f->cap) return true;
    size_t cap = f->cap ? 2 * f->cap : 64;
    free_slot *slots = calloc(cap, sizeof *slots);
    if (!slots) return false;
    for (size_t i = 0; i < f->cap; i++)
        if (f->slots[i].size) *slot_of(slots, cap, f->slots[i].size) = f->slots[i];
    free(f->slots);
    f->slots = slots;
    f->cap = cap;
    return true;
}

void vnm_arena_free(vnm_arena *a, void *p, size_t bytes)
{
    size_t need = rounded(bytes);
    if (a->poison) a->be->fill(p, (int64_t)(need / sizeof(float)), NAN);
    if (!free_list_room(a)) return; /* out of host memory: the block stays unused until reset */
    free_slot *s = slot_of(a->free->slots, a->free->cap, need);
    if (s->count == s->cap) {
        int64_t cap = s->cap ? 2 * s->cap : 8;
        void **ptrs = realloc(s->ptrs, (size_t)cap * sizeof *ptrs);
        if (!ptrs) return;
        s->ptrs = ptrs;
        s->cap = cap;
    }
    if (!s->size) {
        s->size = need;
        a->free->n++;
    }
    s->ptrs[s->count++] = p;
}

static void *reuse(vnm_arena *a, size_t need)
{
    if (!a->free || !a->free->n) return NULL;
    free_slot *s = slot_of(a->free->slots, a->free->cap, need);
    return s->count > 0 ? s->ptrs[--s->count] : NULL;
}

static void free_list_clear(vnm_arena *a, bool release)
{
    vnm_arena_free_list *f = a->free;
    if (!f) return;
    for (size_t i = 0; i < f->cap; i++) {
        f->slots[i].count = 0;
        if (release) free(f->slots[i].ptrs);
    }
    if (!release) return;
    free(f->slots);
    free(f);
    a->free = NULL;
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
    size_t need = rounded(bytes);
    void *p = reuse(a, need);
    if (p) return p;
    vnm_arena_chunk *c = a->chunks;
    if (!c || c->size - c->used < need) {
        size_t size = need > a->chunk_bytes ? need : a->chunk_bytes;
        c = chunk_new(a, size);
        if (!c) return NULL;
    }
    p = c->mem + c->used;
    c->used += need;
    a->used += need;
    if (a->used > a->high) a->high = a->used;
    return p;
}

void vnm_arena_reset(vnm_arena *a)
{
    free_list_clear(a, false);
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
    free_list_clear(a, true);
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
