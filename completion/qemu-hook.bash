# bash completion for qemu-hook(8)                                        -*- shell-script -*-
# Installed as share/bash-completion/completions/qemu-hook (bash-completion loads it on demand);
# works without bash-completion too: `source` it. Completes
#   qemu-hook [OPTIONS] VM OPERATION SUB-OPERATION [EXTRA],  qemu-hook --recover VM,
#   qemu-hook --status [--json]  and  qemu-hook --check [--json] [VM]
# VM names come from libvirt (qemu:///system, read-only, given 2 s at most), and for --recover
# also from the journals of unfinished hand-overs (/run/qemu-hook/*.state, readable by root).
# An option main.c would refuse with those given already (--status with a VM, --check with
# --dry-run...) is not offered.

# The long option a word names, getopt_long's way (an exact name or an unambiguous prefix).
_qemu_hook_long() {
        local name=${1#--} o found=
        for o in dry-run config hooks-dir recover status check json verbose help version; do
                if [[ $o == "$name" ]]; then
                        printf -- '--%s\n' "$o"
                        return 0
                fi
                [[ $o == "$name"* ]] && found+=" $o"
        done
        # shellcheck disable=SC2086  # one word when unambiguous
        set -- $found
        (($# == 1)) && printf -- '--%s\n' "$1"
}

# VM names libvirt knows, one a line; nothing when virsh is missing, fails or takes over 2 s
# (timeout kills virsh's whole process group).
_qemu_hook_libvirt_vms() {
        command -v virsh >/dev/null 2>&1 || return 0
        command -v timeout >/dev/null 2>&1 || return 0
        timeout 2 virsh -r -q -c qemu:///system list --all --name </dev/null 2>/dev/null
}

# The VMs with a journal: the `vm = NAME` line of each JOURNAL_DIR/*.state (\xNN escapes
# undone). QEMU_HOOK_COMPLETION_JOURNAL_DIR is for the tests only.
_qemu_hook_journal_vms() {
        local dir=${QEMU_HOOK_COMPLETION_JOURNAL_DIR:-/run/qemu-hook} f line
        # compgen -G: a glob the user's failglob or nullglob leave alone (journal names have no newline)
        while IFS= read -r f; do
                [[ -f $f && -r $f ]] || continue
                while IFS= read -r line; do
                        if [[ $line == "vm = "* ]]; then
                                printf '%b\n' "${line#vm = }"
                                break
                        fi
                done <"$f"
        done < <(compgen -G "$dir/*.state")
}

# COMPREPLY: the names (one a line on stdin) that start with $1, quoted for the command line.
_qemu_hook_names() {
        local cur=$1 name q
        # what was typed, unquoted enough to compare: no leading quote, no backslashes
        cur=${cur#[\'\"]}
        cur=${cur//\\/}
        while IFS= read -r name; do
                [[ -n $name && $name == "$cur"* ]] || continue
                printf -v q '%q' "$name"
                COMPREPLY+=("$q")
        done
}

# The words of the line as getopt sees them: "--config" "=" "FILE" (split at COMP_WORDBREAKS's
# '=') glued back into "--config=FILE". Sets words and cword, as _init_completion does.
_qemu_hook_words() {
        local i j=-1 glue=0 w
        words=()
        cword=0
        for ((i = 0; i < ${#COMP_WORDS[@]}; i++)); do
                w=${COMP_WORDS[i]}
                if ((j >= 0 && glue)); then
                        words[j]+=$w
                        glue=0
                elif ((j >= 0)) && [[ $w == "=" && ${words[j]} == --?* && ${words[j]} != *=* ]]; then
                        words[j]+=$w
                        glue=1
                else
                        words[++j]=$w
                fi
                ((i == COMP_CWORD)) && cword=$j
        done
        cur=${words[cword]}
}

_qemu_hook() {
        # shellcheck disable=SC2034  # prev and split: set by _init_completion
        local cur prev words cword split
        if declare -F _init_completion >/dev/null 2>&1; then
                _init_completion -n = || return
        else
                _qemu_hook_words
        fi
        COMPREPLY=()

        local options="--dry-run --config --hooks-dir --recover --status --check --json --verbose --help
                       --version -n -c -d -r -s -k -j -v -h -V"
        local i w opt arg='' nargs=0 dashdash=0 recover=0 status=0 check=0 json=0 dry_run=0 k ch
        # What comes before the word completed: options (and their arguments), positionals.
        for ((i = 1; i < cword; i++)); do
                w=${words[i]}
                if ((dashdash)) || [[ $w != -?* ]]; then
                        ((nargs++))
                        continue
                fi
                arg=
                case $w in
                --)
                        dashdash=1
                        continue
                        ;;
                --*=*)
                        opt=$(_qemu_hook_long "${w%%=*}")
                        [[ $opt == --recover ]] && recover=1
                        continue
                        ;;
                --*)
                        opt=$(_qemu_hook_long "$w")
                        case $opt in
                        --help | --version) return 0 ;;
                        --config) arg=files ;;
                        --hooks-dir) arg=dirs ;;
                        --recover) arg=vms recover=1 ;;
                        --status) status=1 ;;
                        --check) check=1 ;;
                        --json) json=1 ;;
                        --dry-run) dry_run=1 ;;
                        esac
                        ;;
                *)      # -nvc FILE, -cFILE: a cluster of short options
                        for ((k = 1; k < ${#w}; k++)); do
                                ch=${w:k:1}
                                case $ch in
                                h | V) return 0 ;;
                                s) status=1 ;;
                                k) check=1 ;;
                                j) json=1 ;;
                                n) dry_run=1 ;;
                                c | d | r)
                                        [[ $ch == r ]] && recover=1
                                        if ((k == ${#w} - 1)); then
                                                case $ch in c) arg=files ;; d) arg=dirs ;; r) arg=vms ;; esac
                                        fi
                                        break
                                        ;;
                                esac
                        done
                        ;;
                esac
                if [[ $arg ]]; then
                        ((i + 1 == cword)) && break
                        ((i++))
                        arg=
                fi
        done

        # The word completed is an option's argument: after it, or after its '='.
        if [[ ! $arg ]] && ((!dashdash)) && [[ $cur == --?*=* ]]; then
                case $(_qemu_hook_long "${cur%%=*}") in
                --config) arg=files ;;
                --hooks-dir) arg=dirs ;;
                --recover) arg=vms ;;
                *) return 0 ;;
                esac
                cur=${cur#*=}
        fi
        case $arg in
        files | dirs)
                if declare -F _filedir >/dev/null 2>&1; then
                        if [[ $arg == dirs ]]; then _filedir -d; else _filedir; fi
                else
                        compopt -o filenames 2>/dev/null
                        local IFS=$'\n'
                        if [[ $arg == dirs ]]; then
                                mapfile -t COMPREPLY < <(compgen -d -- "$cur")
                        else
                                mapfile -t COMPREPLY < <(compgen -f -- "$cur")
                        fi
                fi
                return 0
                ;;
        vms)
                _qemu_hook_names "$cur" < <({
                        _qemu_hook_libvirt_vms
                        _qemu_hook_journal_vms
                } | sort -u)
                return 0
                ;;
        esac

        if ((!dashdash)) && [[ $cur == -* ]]; then
                local -a opts
                read -r -d '' -a opts <<<"$options"
                local o
                for o in "${opts[@]}"; do
                        # what main.c refuses together: --recover VM takes no positional; --status
                        # takes none either; --check one VM at most; neither goes with --recover or
                        # --dry-run, nor with the other; --json only with one of them
                        case $o in
                        --recover | -r) ((nargs || recover || status || check)) && continue ;;
                        --status | -s) ((nargs || recover || status || check || dry_run)) && continue ;;
                        --check | -k) ((nargs > 1 || recover || status || check || dry_run)) && continue ;;
                        --json | -j) ((nargs > 1 || recover || json || dry_run)) && continue ;;
                        --dry-run | -n) ((status || check)) && continue ;;
                        esac
                        [[ $o == "$cur"* ]] && COMPREPLY+=("$o")
                done
                # EXTRA's usual value is "-", which getopt takes as a positional
                ((nargs == 3 && !status && !check)) && [[ $cur == - ]] && COMPREPLY+=(-)
                return 0
        fi
        # --recover VM and --status: no positional; --check: one VM, libvirt's
        ((recover || status)) && return 0
        if ((check)); then
                ((nargs == 0)) && _qemu_hook_names "$cur" < <(_qemu_hook_libvirt_vms | sort -u)
                return 0
        fi
        case $nargs in
        0) _qemu_hook_names "$cur" < <(_qemu_hook_libvirt_vms | sort -u) ;;
        1) mapfile -t COMPREPLY < <(compgen -W "prepare start started stopped release migrate restore reconnect attach" -- "$cur") ;;
        2) mapfile -t COMPREPLY < <(compgen -W "begin end" -- "$cur") ;;
        3) mapfile -t COMPREPLY < <(compgen -W "-" -- "$cur") ;;
        esac
        return 0
} &&
        complete -F _qemu_hook qemu-hook

# ex: filetype=sh
