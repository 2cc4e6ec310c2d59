/* decide(): every combination of a call's facts (3 operations x scripts x journal x 3 config
 * states x 3 handle values x 4 XML states = 432), each checked against the rules as the man page
 * states them, written here as a table of their own; and the rows a reader would look up. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "decide.h"

/* The rules, in the words of qemu-hook(8), first match wins. */
static enum action rules(const struct call_facts *f) {
        enum action only_scripts = f->scripts ? ACTION_SCRIPTS : ACTION_NOTHING;
        static const enum action hand[] = { [CALL_PREPARE] = ACTION_HAND_OVER, [CALL_RELEASE] = ACTION_HAND_BACK };

        /* 1. Operations other than prepare begin and release end run their scripts, if any. */
        if (f->op == CALL_OTHER)
                return only_scripts;
        /* 2. release end with a journal hands back, whatever the rest. */
        if (f->op == CALL_RELEASE && f->journal)
                return ACTION_HAND_BACK;
        /* 3. A config that cannot be used refuses the call (exit 2). */
        if (f->config == CONFIG_BROKEN)
                return ACTION_REFUSE;
        /* 4. Without a config, only scripts. */
        if (f->config == CONFIG_ABSENT)
                return only_scripts;
        /* 5. handle = yes / no in the VM's section decides alone. */
        if (f->handle == 1)
                return hand[f->op];
        if (f->handle == 0)
                return only_scripts;
        /* 6. Otherwise the domain XML: read it first; broken refuses; passing the GPU hands. */
        switch (f->xml) {
        case XML_UNREAD: return ACTION_NEED_XML;
        case XML_BROKEN: return ACTION_REFUSE;
        case XML_PASSES_GPU: return hand[f->op];
        case XML_NO_GPU: return only_scripts;
        }
        return -1;
}

static void test_every_combination(void **state) {
        static const enum call_op ops[] = { CALL_OTHER, CALL_PREPARE, CALL_RELEASE };
        static const enum config_state configs[] = { CONFIG_ABSENT, CONFIG_LOADED, CONFIG_BROKEN };
        static const enum xml_gpu xmls[] = { XML_UNREAD, XML_PASSES_GPU, XML_NO_GPU, XML_BROKEN };
        size_t n = 0;

        for (size_t o = 0; o < 3; o++)
                for (int scripts = 0; scripts < 2; scripts++)
                        for (int journal = 0; journal < 2; journal++)
                                for (size_t c = 0; c < 3; c++)
                                        for (int handle = -1; handle <= 1; handle++)
                                                for (size_t x = 0; x < 4; x++) {
                                                        struct call_facts f = { ops[o], scripts, journal,
                                                                                configs[c], handle, xmls[x] };
                                                        enum action got = decide(&f), want = rules(&f);
                                                        if (got != want)
                                                                fail_msg("op %zu scripts %d journal %d config %zu handle "
                                                                         "%d xml %zu: %s, expected %s", o, scripts,
                                                                         journal, c, handle, x, action_to_string(got),
                                                                         action_to_string(want));
                                                        n++;
                                                }
        assert_int_equal(n, 432);
}

static void test_rows(void **state) {
        static const struct { struct call_facts f; enum action want; } rows[] = {
                /* libvirt's other calls of a VM that is ours never move anything */
                { { CALL_OTHER, false, true, CONFIG_LOADED, 1, XML_PASSES_GPU }, ACTION_NOTHING },
                { { CALL_OTHER, true, false, CONFIG_BROKEN, -1, XML_UNREAD }, ACTION_SCRIPTS },
                /* a VM that is not ours: only its scripts, or nothing */
                { { CALL_PREPARE, false, false, CONFIG_LOADED, -1, XML_NO_GPU }, ACTION_NOTHING },
                { { CALL_PREPARE, true, false, CONFIG_LOADED, -1, XML_NO_GPU }, ACTION_SCRIPTS },
                { { CALL_RELEASE, false, false, CONFIG_LOADED, 0, XML_PASSES_GPU }, ACTION_NOTHING },
                /* ours */
                { { CALL_PREPARE, false, false, CONFIG_LOADED, -1, XML_PASSES_GPU }, ACTION_HAND_OVER },
                { { CALL_PREPARE, false, false, CONFIG_LOADED, 1, XML_BROKEN }, ACTION_HAND_OVER },
                { { CALL_RELEASE, false, false, CONFIG_LOADED, -1, XML_PASSES_GPU }, ACTION_HAND_BACK },
                /* the journal hands back even with the config broken or gone, or handle = no */
                { { CALL_RELEASE, false, true, CONFIG_BROKEN, -1, XML_UNREAD }, ACTION_HAND_BACK },
                { { CALL_RELEASE, false, true, CONFIG_ABSENT, -1, XML_UNREAD }, ACTION_HAND_BACK },
                { { CALL_RELEASE, false, true, CONFIG_LOADED, 0, XML_NO_GPU }, ACTION_HAND_BACK },
                /* a journal does not make a prepare anything but what the config says */
                { { CALL_PREPARE, false, true, CONFIG_ABSENT, -1, XML_UNREAD }, ACTION_NOTHING },
                /* the XML only when it decides */
                { { CALL_PREPARE, false, false, CONFIG_LOADED, -1, XML_UNREAD }, ACTION_NEED_XML },
                { { CALL_PREPARE, false, false, CONFIG_LOADED, -1, XML_BROKEN }, ACTION_REFUSE },
                { { CALL_PREPARE, false, false, CONFIG_BROKEN, 1, XML_PASSES_GPU }, ACTION_REFUSE },
        };

        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
                enum action got = decide(&rows[i].f);
                if (got != rows[i].want)
                        fail_msg("row %zu: %s, expected %s", i + 1, action_to_string(got),
                                 action_to_string(rows[i].want));
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_every_combination),
                cmocka_unit_test(test_rows),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
