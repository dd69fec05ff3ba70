/* xe-commands.c — the command table built from commands.def, and its
 * lookup.  Keeping every command in one declarative file lets `xe help`,
 * the bash completion and the tests' coverage count read the same facts. */
#include <config.h>
#include "xe.h"

#include <string.h>

const struct xe_cmd xe_commands[] = {
#define XE_COMMAND(name, handler, reqd, optn, flags, help) \
    { name, handler, reqd, optn, help, flags },
#include "commands.def"
#undef XE_COMMAND
};

const size_t xe_n_commands = ARRAY_SIZE(xe_commands);

const struct xe_cmd *
xe_command_find(const char *name)
{
    for (size_t i = 0; i < xe_n_commands; i++) {
        if (!strcmp(xe_commands[i].name, name)) {
            return &xe_commands[i];
        }
    }
    return NULL;
}
