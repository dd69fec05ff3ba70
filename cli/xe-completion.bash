# xe-completion.bash — bash completion for xe: command names (asked of xe
# itself, so that they always match the binary), and the parameter names
# of the command being typed (from `xe help COMMAND`).
# Use: . cli/xe-completion.bash   (or install it in
# /etc/bash_completion.d/xe).

_xe_complete()
{
    local cur cmd line
    cur=${COMP_WORDS[COMP_CWORD]}
    cmd=
    for w in "${COMP_WORDS[@]:1:COMP_CWORD-1}"; do
        case $w in
            -*|*=*) ;;
            *) cmd=$w; break ;;
        esac
    done
    if [ -z "$cmd" ]; then
        COMPREPLY=($(compgen -W "$(xe --list-commands 2>/dev/null) help" -- "$cur"))
        return
    fi
    # Parameter names: the command's listed params plus the common flags.
    line=$(xe help "$cmd" 2>/dev/null | sed -n 's/^ *\(reqd\|optional\) params: //p' | tr ',' ' ')
    case $cmd in
        *-list|*-param-*) line="$line params= uuid= param-name= param-key= --minimal" ;;
    esac
    COMPREPLY=($(compgen -W "$(for p in $line; do case $p in --*|*=|*:) echo "$p" ;; *) echo "$p=" ;; esac; done) --minimal --multiple --force" -- "$cur"))
    compopt -o nospace 2>/dev/null
}
complete -F _xe_complete xe
