/* sparse/error.c — the error convention of the host-side sparse functions (see internal.h). */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

vnm_status vnm_sparse_fail(char *err, size_t err_len, const char *fmt, ...)
{
    if (err && err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return VNM_ERR_INPUT;
}
