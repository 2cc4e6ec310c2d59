#include <string.h>

#include "decide.h"

enum call_op call_op(const char *op, const char *sub) {
        if (strcmp(op, "prepare") == 0 && strcmp(sub, "begin") == 0)
                return CALL_PREPARE;
        if (strcmp(op, "release") == 0 && strcmp(sub, "end") == 0)
                return CALL_RELEASE;
        return CALL_OTHER;
}

enum action decide(const struct call_facts *f) {
        enum action nothing = f->scripts ? ACTION_SCRIPTS : ACTION_NOTHING;

        /* `reconnect`, `started`... never move a GPU: a failure there makes libvirt kill the VM. */
        if (f->op == CALL_OTHER)
                return nothing;
        /* A recorded hand-over goes back whatever the config or the XML say now: the journal
         * holds all the undo needs, and the host must get its GPU back. */
        if (f->op == CALL_RELEASE && f->journal)
                return ACTION_HAND_BACK;
        if (f->config == CONFIG_BROKEN)
                return ACTION_REFUSE;
        if (f->config == CONFIG_ABSENT)
                return nothing;
        bool ours;
        if (f->handle >= 0)
                ours = f->handle;
        else if (f->xml == XML_UNREAD)
                return ACTION_NEED_XML;
        else if (f->xml == XML_BROKEN)
                return ACTION_REFUSE;
        else
                ours = f->xml == XML_PASSES_GPU;
        if (!ours)
                return nothing;
        return f->op == CALL_PREPARE ? ACTION_HAND_OVER : ACTION_HAND_BACK;
}

const char *action_to_string(enum action a) {
        static const char *const names[] = {
                [ACTION_NOTHING] = "nothing", [ACTION_SCRIPTS] = "scripts", [ACTION_HAND_OVER] = "hand-over",
                [ACTION_HAND_BACK] = "hand-back", [ACTION_NEED_XML] = "need-xml", [ACTION_REFUSE] = "refuse",
        };
        return (unsigned) a < sizeof(names) / sizeof(names[0]) ? names[a] : "?";
}
