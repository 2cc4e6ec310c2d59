/* CPU lists to and from the AllowedCPUs bit masks systemd keeps. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "bus.h"

static void round_trip(const char *list, const char *canonical, size_t want_len) {
        uint8_t mask[16];
        char back[128];
        size_t len = 99;

        assert_int_equal(cpu_list_to_mask(list, mask, sizeof(mask), &len), 0);
        assert_int_equal(len, want_len);
        assert_int_equal(cpu_mask_to_list(mask, len, back, sizeof(back)), 0);
        assert_string_equal(back, canonical);
}

static void test_round_trips(void **state) {
        round_trip("", "", 0);
        round_trip("0", "0", 1);
        round_trip("0-3,8", "0-3,8", 2);
        round_trip("0,1,6,7", "0-1,6-7", 1);
        round_trip("7", "7", 1);
        round_trip("8", "8", 2);
        round_trip("3,2,1,0", "0-3", 1);
        round_trip("0-3, 2-5", "0-5", 1);
        round_trip(" 1 , 3 ", "1,3", 1);
        round_trip("0-127", "0-127", 16);
        round_trip("4-4", "4", 1);
}

static void test_mask_bits(void **state) {
        uint8_t mask[4];
        size_t len;

        /* Bit n of byte n / 8: what systemd's cpu_set_to_dbus() produces. */
        assert_int_equal(cpu_list_to_mask("0-3,8", mask, sizeof(mask), &len), 0);
        assert_int_equal(len, 2);
        assert_int_equal(mask[0], 0x0f);
        assert_int_equal(mask[1], 0x01);
        assert_int_equal(cpu_list_to_mask("1,6,7,9,23", mask, sizeof(mask), &len), 0);
        assert_int_equal(len, 3);
        assert_int_equal(mask[0], 0xc2);
        assert_int_equal(mask[1], 0x02);
        assert_int_equal(mask[2], 0x80);
}

static void test_mask_to_list(void **state) {
        const uint8_t zeros[3] = { 0 }, trailing[3] = { 0x01, 0x00, 0x00 }, all[2] = { 0xff, 0xff };
        char list[64];

        /* An empty mask, or one of zero bytes, is "all CPUs" to systemd: "" either way. */
        assert_int_equal(cpu_mask_to_list(NULL, 0, list, sizeof(list)), 0);
        assert_string_equal(list, "");
        assert_int_equal(cpu_mask_to_list(zeros, sizeof(zeros), list, sizeof(list)), 0);
        assert_string_equal(list, "");
        assert_int_equal(cpu_mask_to_list(trailing, sizeof(trailing), list, sizeof(list)), 0);
        assert_string_equal(list, "0");
        assert_int_equal(cpu_mask_to_list(all, sizeof(all), list, sizeof(list)), 0);
        assert_string_equal(list, "0-15");
}

static void test_too_small(void **state) {
        const uint8_t alternate[2] = { 0x55, 0x55 };
        char list[8];

        /* "0,2,4,6,8,10,12,14" does not fit 8 bytes: whole entries only, and said so. */
        assert_int_equal(cpu_mask_to_list(alternate, sizeof(alternate), list, sizeof(list)), -ENAMETOOLONG);
        assert_string_equal(list, "0,2,4,6");
}

static void test_bad_input(void **state) {
        static const char *const bad[] = {
                "a", "1-", "-1", "3-1", "1,,2", "0-3,", ",1", "1 2", "1-2-3", "0x3", "1;2", "+1",
        };
        uint8_t mask[4];
        size_t len;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                int r = cpu_list_to_mask(bad[i], mask, sizeof(mask), &len);
                if (r != -EINVAL)
                        fail_msg("\"%s\": expected -EINVAL, got %d", bad[i], r);
        }
        /* A CPU beyond the mask is a range error, not a silent truncation. */
        assert_int_equal(cpu_list_to_mask("32", mask, sizeof(mask), &len), -ERANGE);
        assert_int_equal(cpu_list_to_mask("0-40", mask, sizeof(mask), &len), -ERANGE);
        assert_int_equal(cpu_list_to_mask("99999999999999999999", mask, sizeof(mask), &len), -ERANGE);
        assert_int_equal(cpu_list_to_mask("31", mask, sizeof(mask), &len), 0);
        assert_int_equal(len, 4);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_round_trips),
                cmocka_unit_test(test_mask_bits),
                cmocka_unit_test(test_mask_to_list),
                cmocka_unit_test(test_too_small),
                cmocka_unit_test(test_bad_input),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
