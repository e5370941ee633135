/* tests/test_sparse_choose.c — the two-phase V/M rule of METHOD §3 (vnm_vm_choose). */
#include <math.h>

#include "sparse/sparse.h"
#include "test_util.h"

static vnm_vm_candidate cand(int V, int M, double speedup)
{
    vnm_vm_candidate c = {{V, 2, M}, speedup, 0, false};
    return c;
}

static void test_choose_largest_kappa_among_fast_enough(void **state)
{
    (void)state;
    vnm_vm_candidate c[] = {cand(64, 5, 1.10), cand(64, 8, 1.60), cand(128, 6, 1.35),
                            cand(16, 5, 0.90)};
    int best = vnm_vm_choose(c, 4, 1.3);
    /* 64:2:5 has the largest κ but is too slow; 128:2:6 beats 64:2:8 on κ */
    assert_int_equal(best, 2);
    assert_false(c[0].kept);
    assert_true(c[1].kept);
    assert_true(c[2].kept);
    assert_false(c[3].kept);
    assert_true(fabs(c[0].kappa - 0.3634) < 5e-5); /* METHOD §3 */
    assert_true(fabs(c[1].kappa - 0.2323) < 5e-5);
    assert_true(c[2].kappa > c[1].kappa);
}

static void test_choose_ties_go_to_larger_v(void **state)
{
    (void)state;
    /* at M = 4 (plain 2:4), ln C(4,4) = 0 and κ = ln 6 / 4 for every V: a tie */
    vnm_vm_candidate c[] = {cand(16, 4, 2.0), cand(128, 4, 1.5), cand(64, 4, 3.0)};
    assert_int_equal(vnm_vm_choose(c, 3, 1.0), 1);
    assert_true(fabs(c[0].kappa - log(6.0) / 4) < 1e-12);
    assert_true(fabs(c[0].kappa - 0.4479) < 5e-5); /* METHOD §3: 2:4 */
}

static void test_choose_none_fast_enough(void **state)
{
    (void)state;
    vnm_vm_candidate c[] = {cand(64, 5, 0.8), cand(64, 8, 1.2)};
    assert_int_equal(vnm_vm_choose(c, 2, 1.5), -1);
    assert_false(c[0].kept || c[1].kept);
    assert_int_equal(vnm_vm_choose(c, 0, 1.0), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_choose_largest_kappa_among_fast_enough),
        cmocka_unit_test(test_choose_ties_go_to_larger_v),
        cmocka_unit_test(test_choose_none_fast_enough),
    };
    return cmocka_run_group_tests_name("sparse_choose", tests, NULL, NULL);
}
