#ifndef GATECTL_H
#define GATECTL_H

/*
 * gatectl(1): the control-plane client. parser.c reads proto.c's table (commands, help,
 * bash completion), output.c prints replies, follow.c follows the PUB stream's log topic.
 */

#include <stdio.h>

#include <cjson/cJSON.h>

#include "proto.h"

#define GATECTL_OK 0
#define GATECTL_REFUSED 1
#define GATECTL_USAGE 2
#define GATECTL_UNREACHABLE 3

#define GATECTL_DEFAULT_URL "ipc:///tmp/gatewayd.ctl"

/* parser.c */
/* Prints the usage of every command, or of those whose name starts with `only`. 0 when
 * something was printed, -1 when no command matches. */
int parser_usage(FILE *f, const char *only);
/*
 * The command that argv names (one word, or two for a sub-command), its arguments put in
 * vals[] in table order (pointers into argv; NULL when not given) and checked against
 * the table. NULL after a message on stderr.
 */
const struct proto_command *parser_parse(int argc, char *argv[], const char *vals[PROTO_MAX_ARGS]);
/* Writes the bash completion script for gatectl to f. */
void parser_completion_bash(FILE *f);

/* output.c */
/* Prints a successful reply of cmd for people. */
void output_human(const struct proto_command *cmd, const cJSON *reply);
/* One access-log entry (the PUB stream's log object) as one line. */
void output_log_line(const cJSON *entry);

/* follow.c */
/* Prints the log topic of the PUB stream at url until SIGINT/SIGTERM/SIGPIPE; json: raw.
 * GATECTL_OK, or GATECTL_UNREACHABLE after a message. */
int follow_logs(const char *url, int json);

#endif
