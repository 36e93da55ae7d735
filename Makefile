# gatewayd — one non-recursive GNU Makefile for the daemon, the tools, the tests and the
# fuzzers. Sources are found by wildcard so that a new module is one new file, never a
# Makefile edit: gatewayd/*.c (minus gatewayd.c, the main) and shared/*.c go into
# build/libgw.a, which the daemon, every unit test and every fuzzer link against.

PREFIX ?= /usr/local
BUILD ?= build
BIN ?= bin
CC ?= cc
FUZZ_SECONDS ?= 10

PKGS := libevent_core libevent_pthreads openssl libcjson sqlite3 libcrypt libmaxminddb libcurl hiredis libpq
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN := -Wall -Wextra -Werror -Wshadow -Wpointer-arith -Wcast-qual -Wstrict-prototypes \
	-Wmissing-prototypes -Wmissing-declarations -Wsign-compare -Wformat=2 \
	-Wno-unused-parameter
CFLAGS ?= -O2 -g
ALL_CFLAGS := -std=gnu11 $(CFLAGS) $(WARN) -D_GNU_SOURCE -Ishared -Igatewayd $(PKG_CFLAGS) $(EXTRA_CFLAGS)
LDLIBS := $(PKG_LIBS) -lnng -lpthread -lm $(EXTRA_LDLIBS)

SHARED_SRC := $(wildcard shared/*.c)
GW_SRC := $(filter-out gatewayd/gatewayd.c,$(wildcard gatewayd/*.c))
LIB_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(SHARED_SRC) $(GW_SRC))
# The dashboard page is compiled in from a C file generated in the build tree.
DASH_C := $(BUILD)/gen/dashboard_html.c
LIB_OBJ += $(BUILD)/gen/dashboard_html.o
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))
DEPS_STAMP := $(BUILD)/.deps-ok

.PHONY: all deps test unit micro e2e fuzz fuzz-build fuzz-long asan asan-test soak run install clean format lint

all: $(BIN)/gatewayd $(BIN)/gatectl $(BIN)/gatetop $(BIN)/mockbackend

# Installs missing -dev packages (apt-get) once per build tree; see scripts/deps.sh.
$(DEPS_STAMP): scripts/deps.sh
	@mkdir -p $(BUILD)
	@sh scripts/deps.sh
	@touch $@

deps: $(DEPS_STAMP)

$(BUILD)/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(DASH_C): gatewayd/dashboard.html scripts/embed.sh
	@mkdir -p $(dir $@)
	sh scripts/embed.sh dashboard_html dashboard.h $< >$@.tmp && mv $@.tmp $@

$(BUILD)/gen/dashboard_html.o: $(DASH_C) gatewayd/dashboard.h | $(DEPS_STAMP)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/libgw.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN)/gatewayd: $(BUILD)/gatewayd/gatewayd.o $(BUILD)/libgw.a
	@mkdir -p $(BIN)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)

$(BIN)/gatectl: $(patsubst %.c,$(BUILD)/%.o,$(wildcard gatectl/*.c)) $(BUILD)/libgw.a
	@mkdir -p $(BIN)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)

# Bash completion, generated from the command table (shared/proto.c).
$(BUILD)/gatectl.bash: $(BIN)/gatectl
	$(BIN)/gatectl completion bash >$@.tmp && mv $@.tmp $@

# gatetop links the wide-character curses (UTF-8 sparklines) on top of libgw.a.
GATETOP_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard gatetop/*.c))
CURSES_LIBS := $(shell pkg-config --libs ncursesw 2>/dev/null || echo -lncursesw)
$(BIN)/gatetop: $(GATETOP_OBJ) $(BUILD)/libgw.a
	@mkdir -p $(BIN)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS) $(CURSES_LIBS)

# The mock links libgw.a for the gateway's HTTP tables (http_status_reason).
$(BIN)/mockbackend: tests/mockbackend.c $(BUILD)/libgw.a | $(DEPS_STAMP)
	@mkdir -p $(BIN)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libgw.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Wno-missing-prototypes -Wno-missing-declarations -o $@ $^ \
		$(LDLIBS) -lcmocka

unit: $(UNIT_BIN)

# Microbenchmarks (per-call cost of a limiter decision, a JWT check, ...): `make micro`.
MICRO_BIN := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/micro_*.c))
$(BUILD)/bench/%: bench/%.c $(BUILD)/libgw.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Wno-missing-prototypes -Wno-missing-declarations -o $@ $^ $(LDLIBS)

micro: $(MICRO_BIN)
	@for b in $(MICRO_BIN); do echo "== $$b"; $$b; done

# Everything: unit tests, end-to-end tests against the real binaries, a short run of
# every fuzzer. Ends with the one line "tests: N passed, M failed".
test: all $(UNIT_BIN)
	@sh tests/run.sh

# libFuzzer targets, built with clang and ASan+UBSan. The sources are compiled once into
# build/fuzzobj (instrumented for coverage, no main) and every fuzzer links against them.
FUZZ_CFLAGS := -std=gnu11 -g -O1 -fsanitize=address,undefined -D_GNU_SOURCE \
	-Ishared -Igatewayd $(PKG_CFLAGS)
FUZZ_OBJ := $(patsubst %.c,$(BUILD)/fuzzobj/%.o,$(SHARED_SRC) $(GW_SRC))
FUZZ_OBJ += $(BUILD)/fuzzobj/gen/dashboard_html.o
$(BUILD)/fuzzobj/gen/dashboard_html.o: $(DASH_C) gatewayd/dashboard.h | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -c $< -o $@
$(BUILD)/fuzzobj/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(BUILD)/fuzz/%: tests/fuzz/%.c $(FUZZ_OBJ)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)

fuzz-build: $(FUZZ_BIN)

fuzz: $(FUZZ_BIN)
	@for f in $(FUZZ_BIN); do n=$$(basename $$f); mkdir -p $(BUILD)/fuzz/corpus-$$n; \
		$$f -max_total_time=$(FUZZ_SECONDS) $(BUILD)/fuzz/corpus-$$n tests/fuzz/corpus/$$n \
		|| exit 1; done

fuzz-long:
	$(MAKE) fuzz FUZZ_SECONDS=300

# Mixed load with RSS, descriptor and status checks (tests/soak/soak.py): 10 minutes here,
# 60 s inside `make test`.
SOAK_SECONDS ?= 600
soak: all
	SOAK_SECONDS=$(SOAK_SECONDS) GWTEST_BIN=$(abspath $(BIN)) python3 tests/soak/soak.py

# Address+undefined sanitizer build in its own tree (build-asan/, binaries in
# build-asan/bin); `make asan-test` runs the unit and end-to-end tests on it.
ASAN_FLAGS := BUILD=build-asan BIN=build-asan/bin \
	CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer" \
	EXTRA_LDLIBS="-fsanitize=address,undefined"
asan:
	$(MAKE) $(ASAN_FLAGS) all unit

# The daemons' stderr is a test's temporary file, so sanitizer reports (leaks at exit
# included) go to build-asan/reports instead: any report there fails the run.
ASAN_REPORTS := $(CURDIR)/build-asan/reports
asan-test: asan
	@rm -rf $(ASAN_REPORTS) && mkdir -p $(ASAN_REPORTS)
	BUILD=build-asan SKIP_FUZZ=1 SKIP_SOAK=1 GWTEST_SANITIZED=1 GWTEST_BIN=$(CURDIR)/build-asan/bin \
		ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:log_path=$(ASAN_REPORTS)/asan \
		UBSAN_OPTIONS=print_stacktrace=1:log_path=$(ASAN_REPORTS)/ubsan \
		sh tests/run.sh; rc=$$?; \
	if [ -n "$$(ls $(ASAN_REPORTS))" ]; then head -n 40 $(ASAN_REPORTS)/*; \
		echo "asan-test: sanitizer reports in $(ASAN_REPORTS)"; exit 1; fi; exit $$rc

run: all
	@sh scripts/run-demo.sh

install: all $(BUILD)/gatectl.bash
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 \
		$(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(PREFIX)/share/man/man8
	install -m 755 $(BIN)/gatewayd $(BIN)/gatectl $(BIN)/gatetop $(BIN)/mockbackend $(DESTDIR)$(PREFIX)/bin/
	for m in man/*.[158]; do s=$${m##*.}; install -m 644 $$m $(DESTDIR)$(PREFIX)/share/man/man$$s/; done
	install -d $(DESTDIR)$(PREFIX)/share/bash-completion/completions
	install -m 644 $(BUILD)/gatectl.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/gatectl

format:
	clang-format -i shared/*.[ch] gatewayd/*.[ch] tests/*.c tests/unit/*.c tests/fuzz/*.c

lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
		--inline-suppr --std=c11 -D_GNU_SOURCE -Ishared -Igatewayd shared gatewayd gatetop \
		tests/mockbackend.c

clean:
	rm -rf build build-asan bin

-include $(LIB_OBJ:.o=.d) $(BUILD)/gatewayd/gatewayd.d
-include $(GATETOP_OBJ:.o=.d)
