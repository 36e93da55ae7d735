#ifndef GATECTL_H
#define GATECTL_H

/* gatectl(1): the control-plane client. parser.c reads proto.c's table, output.c prints. */

#include <cjson/cJSON.h>

#include "proto.h"

#define GATECTL_OK 0
#define GATECTL_REFUSED 1
#define GATECTL_USAGE 2
#define GATECTL_UNREACHABLE 3

#define GATECTL_DEFAULT_URL "ipc:///tmp/gatewayd.ctl"

/* parser.c */
/* Prints the usage of every command (or of one) to f. */
void parser_usage(FILE *f, const struct proto_command *only);
/* The command argv[0] names, its arguments checked against the table; NULL after a message. */
const struct proto_command *parser_parse(int argc, char *argv[]);

/* output.c */
/* Prints a successful reply of cmd for people. */
void output_human(const struct proto_command *cmd, const cJSON *reply);

#endif
