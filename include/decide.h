/* What a call of the hook is: one decision, a pure function of the call's facts, made the same
 * way by both executables (qemu-hook settles the calls that come out as nothing; qemu-hook-act
 * does the rest). */
#pragma once
#include <stdbool.h>

enum call_op {
        CALL_OTHER,             /* every operation but these two: only scripts, ever */
        CALL_PREPARE,           /* prepare begin: the hand-over */
        CALL_RELEASE,           /* release end: the hand-back */
};

enum config_state {
        CONFIG_ABSENT,          /* no default kvm.conf: the hook is only the scripts' dispatcher */
        CONFIG_LOADED,
        CONFIG_BROKEN,          /* unreadable, refused or wrong: reported where it was read */
};

enum xml_gpu {
        XML_UNREAD,             /* not read yet: decide() asks for it when it matters */
        XML_PASSES_GPU,         /* a <hostdev> of the domain is a function of the GPU */
        XML_NO_GPU,
        XML_BROKEN,             /* missing or malformed: reported where it was read */
};

struct call_facts {
        enum call_op op;
        bool scripts;           /* qemu.d has something for this call (runnable or refused) */
        bool journal;           /* the VM has a hand-over journal */
        enum config_state config;
        int handle;             /* the config's [vm NAME] handle: -1 unset, 0 never, 1 always */
        enum xml_gpu xml;
};

enum action {
        ACTION_NOTHING,         /* exit 0, touching nothing */
        ACTION_SCRIPTS,         /* the call's scripts, nothing of the GPU */
        ACTION_HAND_OVER,       /* the hand-over, its scripts its last steps */
        ACTION_HAND_BACK,       /* the scripts, then the hand-back */
        ACTION_NEED_XML,        /* it depends on the domain XML: read it into xml, decide again */
        ACTION_REFUSE,          /* a broken config or XML where it decides: exit 2, nothing done */
};

/* What libvirt's OPERATION SUB-OPERATION is to the hook. */
enum call_op call_op(const char *op, const char *sub);
enum action decide(const struct call_facts *f);
const char *action_to_string(enum action a);
