/* args.h — table-driven option parsing for the subcommands: "--name value" or "--name=value",
 * flags without a value, positional arguments collected in order, and a --help text made
 * from the same table. Errors are one line naming the option and what was expected. */
#ifndef AF_CLI_ARGS_H
#define AF_CLI_ARGS_H

#include <stddef.h>

typedef enum { ARG_STR, ARG_INT, ARG_FLOAT, ARG_FLAG, ARG_U64 } arg_type;

typedef struct arg_opt {
    const char *name;   /* without the dashes */
    arg_type type;
    void *ptr;          /* const char **, int *, double *, int * (flag), uint64_t * */
    const char *help;
} arg_opt;

/* Parses argv[0..argc) (argv[0] is the first option, not the program). Positional arguments
 * go to pos[0..*npos) (at most max_pos). Returns 0, 1 if --help was given (help printed to
 * stdout), or -1 after printing "artificien CMD: problem" to stderr. */
int args_parse(const char *cmd, const char *usage, const arg_opt *opts, int argc, char **argv,
               char **pos, int *npos, int max_pos);

/* Prints the usage line and the option table. */
void args_help(const char *cmd, const char *usage, const arg_opt *opts);

#endif
