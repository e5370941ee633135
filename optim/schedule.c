/* optim/schedule.c — learning-rate schedules as pure functions of the step (formulas in optim.h),
 * their names, and the checks a recipe loader runs on them. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "optim.h"

static const char *const kind_names[] = {
    [VNM_SCHEDULE_CONSTANT] = "constant",
    [VNM_SCHEDULE_COSINE] = "cosine",
    [VNM_SCHEDULE_STEP] = "step",
    [VNM_SCHEDULE_LINEAR] = "linear",
};
enum { N_KINDS = sizeof kind_names / sizeof *kind_names };

const char *vnm_schedule_kind_name(vnm_schedule_kind kind)
{
    return (unsigned)kind < N_KINDS ? kind_names[kind] : "unknown";
}

vnm_status vnm_schedule_parse_kind(const char *name, vnm_schedule_kind *kind, char *err,
                                   size_t err_len)
{
    for (int k = 0; name && k < N_KINDS; k++) {
        if (strcmp(name, kind_names[k]) == 0) {
            *kind = (vnm_schedule_kind)k;
            return VNM_OK;
        }
    }
    if (err)
        snprintf(err, err_len, "unknown schedule '%s' (known: constant, cosine, step, linear)",
                 name ? name : "(null)");
    return VNM_ERR_INPUT;
}

/* Degenerate settings (rejected by vnm_schedule_validate) still give a finite lr: a decay with no
 * span is already at its end, a step schedule without step_size never steps. */
double vnm_schedule_lr(const vnm_schedule *s, int64_t step)
{
    if (step < 0) step = 0;
    if (step < s->warmup_steps)
        return s->warmup_start_lr +
               (s->base_lr - s->warmup_start_lr) * (double)step / (double)s->warmup_steps;
    int64_t t = step - s->warmup_steps;
    int64_t span = s->total_steps - s->warmup_steps;
    switch (s->kind) {
    case VNM_SCHEDULE_CONSTANT: return s->base_lr;
    case VNM_SCHEDULE_COSINE:
        if (t >= span) return s->min_lr;
        return s->min_lr +
               0.5 * (s->base_lr - s->min_lr) * (1.0 + cos(M_PI * ((double)t / (double)span)));
    case VNM_SCHEDULE_STEP:
        if (s->step_size <= 0) return s->base_lr;
        return s->base_lr * pow(s->gamma, (double)(t / s->step_size));
    case VNM_SCHEDULE_LINEAR:
        if (t >= span) return s->min_lr;
        return s->base_lr + (s->min_lr - s->base_lr) * ((double)t / (double)span);
    }
    return s->base_lr;
}

vnm_status vnm_schedule_validate(const vnm_schedule *s, char *err, size_t err_len)
{
    char msg[200] = "";
    if ((unsigned)s->kind >= N_KINDS)
        snprintf(msg, sizeof msg, "unknown schedule kind %d", (int)s->kind);
    else if (!(s->base_lr >= 0.0) || !(s->warmup_start_lr >= 0.0) || !(s->min_lr >= 0.0))
        snprintf(msg, sizeof msg, "learning rates must be >= 0 (base %g, warm-up start %g, min %g)",
                 s->base_lr, s->warmup_start_lr, s->min_lr);
    else if (s->warmup_steps < 0)
        snprintf(msg, sizeof msg, "warmup_steps is %lld, expected >= 0",
                 (long long)s->warmup_steps);
    else if ((s->kind == VNM_SCHEDULE_COSINE || s->kind == VNM_SCHEDULE_LINEAR) &&
             s->total_steps <= s->warmup_steps)
        snprintf(msg, sizeof msg, "%s schedule: total_steps (%lld) must exceed warmup_steps (%lld)",
                 kind_names[s->kind], (long long)s->total_steps, (long long)s->warmup_steps);
    else if (s->kind == VNM_SCHEDULE_STEP && (s->step_size <= 0 || !(s->gamma > 0.0)))
        snprintf(msg, sizeof msg, "step schedule: step_size (%lld) and gamma (%g) must be > 0",
                 (long long)s->step_size, s->gamma);
    if (!msg[0]) return VNM_OK;
    if (err) snprintf(err, err_len, "%s", msg);
    return VNM_ERR_INPUT;
}
