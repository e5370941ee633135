/* autograd/cpu/backend_cpu.c — assembles the CPU kernel table from the per-topic kernel files. */
#include "../backend.h"

static vnm_backend cpu;
static bool ready;

const vnm_backend *vnm_backend_cpu(void)
{
    if (!ready) {
        cpu.name = "cpu";
        vnm_cpu_register_memory(&cpu);
        vnm_cpu_register_gemm(&cpu);
        vnm_cpu_register_elementwise(&cpu);
        vnm_cpu_register_activation(&cpu);
        vnm_cpu_register_norm(&cpu);
        vnm_cpu_register_softmax(&cpu);
        vnm_cpu_register_attention(&cpu);
        vnm_cpu_register_attention_half(&cpu);
        vnm_cpu_register_embedding(&cpu);
        vnm_cpu_register_rope(&cpu);
        vnm_cpu_register_random(&cpu);
        vnm_cpu_register_dropout(&cpu);
        vnm_cpu_register_loss(&cpu);
        vnm_cpu_register_optim(&cpu);
        ready = true;
    }
    return &cpu;
}
