#!/bin/sh
# Writes a C file that embeds a file's bytes: `sh scripts/embed.sh NAME HEADER FILE`
# defines `const char NAME[]` (the bytes and a NUL) and `const size_t NAME_len`.
# Octal escapes in string literals: no char-range warnings, and od and awk are all it
# needs (no xxd), so a plain Debian base system can build it.
set -eu
name=$1
header=$2
file=$3
len=$(wc -c <"$file" | tr -d ' ')
printf '/* Generated from %s by scripts/embed.sh: do not edit. */\n' "$file"
printf '#include "%s"\n\n' "$header"
printf 'const char %s[] =\n' "$name"
od -An -v -to1 "$file" | awk '{ line = "\t\""; for (i = 1; i <= NF; i++) line = line "\\" $i; print line "\"" }'
printf '\t"";\n'
printf 'const size_t %s_len = %s;\n' "$name" "$len"
