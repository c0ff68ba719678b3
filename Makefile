# gov-pay edge: build, test and demo.
#
#   make demo      install packages, build, start the offline demo (README.md)
#   make test      install packages, build, run the test suite (prove -r t/)
#
# Outputs (docs/internals.md): $(BUILD)/nginx/objs/ngx_http_gov_pay_module.so,
# $(BUILD)/libgpcommon.a, $(BUILD)/gov-pay-worker, $(BUILD)/tests/test_common.
# SANITIZE=1 adds AddressSanitizer and UndefinedBehaviorSanitizer everywhere;
# `make asan` does that in build-asan/ and runs the tests against it.

SHELL    := /bin/bash

SANITIZE ?=
ifeq ($(SANITIZE),1)
BUILD    ?= build-asan
SAN      := -fsanitize=address,undefined -fno-omit-frame-pointer
else
BUILD    ?= build
SAN      :=
endif

CC       ?= cc
CFLAGS   := -Wall -Wextra -Werror -O2 -g $(SAN)
LDFLAGS  := $(SAN)

NGX_SRC  := /usr/share/nginx/src
NGX_DIR  := $(BUILD)/nginx
MODULE   := $(NGX_DIR)/objs/ngx_http_gov_pay_module.so

# nginx adds "-W -Wall -Wpointer-arith -Wno-unused-parameter -Werror -g" to
# these by itself (auto/cc/gcc), so the module builds with -Wall -Wextra
# -Werror as well; only flags that are safe for configure's own feature
# tests go here (a warning there would silently turn a feature off).
NGX_CC_OPT := -g -O2 -fstack-protector-strong -Wformat \
              -Werror=format-security -fPIC -D_FORTIFY_SOURCE=2 $(SAN)
NGX_LD_OPT := -Wl,-z,relro -Wl,-z,now -fPIC $(SAN)

COMMON_SRCS := $(wildcard common/*.c)
COMMON_OBJS := $(COMMON_SRCS:%.c=$(BUILD)/obj/%.o)
COMMON_LIB  := $(BUILD)/libgpcommon.a
COMMON_LIBS := -ljansson -lcrypto -lgcrypt

WORKER_SRCS := $(wildcard workers/*.c workers/plugins/*.c)
WORKER_OBJS := $(WORKER_SRCS:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/gp_scripts.o
# the Redis scripts the worker runs: the module's own and the worker's
# (workers/gp_script.h), embedded as gp_scripts[]
WORKER_LUA   = $(sort $(wildcard ngx_gov_pay_module/scripts/*.lua \
                                 workers/scripts/*.lua))
WORKER      := $(BUILD)/gov-pay-worker
WORKER_LIBS := -lhiredis -ljansson -lcurl -lcrypto -lgcrypt -lpthread \
               $(shell pkg-config --libs cairo freetype2 2>/dev/null) -lqrencode
WORKER_INCS := $(shell pkg-config --cflags cairo freetype2 2>/dev/null)

LEDGER      := $(BUILD)/gov-pay-ledger
LEDGER_OBJS := $(BUILD)/obj/tools/gov_pay_ledger.o

TEST_COMMON := $(BUILD)/tests/test_common
SEAL_TOOL   := $(BUILD)/tests/seal_tool

LUA_SCRIPTS  = $(sort $(wildcard ngx_gov_pay_module/scripts/*.lua))
TEMPLATES    = $(sort $(wildcard conf/templates/*))

FORMAT_SRCS := $(wildcard ngx_gov_pay_module/*.[ch] common/*.[ch] \
                 common/tests/*.[ch] workers/*.[ch] workers/plugins/*.[ch] \
                 tools/*.[ch])

PROVE       ?= prove

.PHONY: all deps build module common worker unit ledger test demo fuzz fuzz-build \
        demo-notice demo-stop clean asan valgrind format bench bench-notify \
        bench-receipts bench-memory bench-tools browser-deps

all: build

deps:
	@bash scripts/install-deps.sh

build: module common worker unit ledger

# -- the nginx module --------------------------------------------------------

# a private copy of Debian's nginx source tree (configure + headers), once
$(NGX_DIR)/configure:
	@test -x $(NGX_SRC)/configure || { \
	    echo "$(NGX_SRC) is missing: run 'make deps' (package nginx-dev)" >&2; \
	    exit 1; }
	@mkdir -p $(BUILD)
	rm -rf $(NGX_DIR).tmp
	cp -a $(NGX_SRC) $(NGX_DIR).tmp
	mv $(NGX_DIR).tmp $(NGX_DIR)

# configure with Debian's flags (--with-compat: the .so loads into Debian's
# /usr/sbin/nginx); again whenever `config` (the module's file list) changes
$(NGX_DIR)/objs/Makefile: config $(NGX_DIR)/configure
	cd $(NGX_DIR) && bash -c 'source ./conf_flags && ./configure \
	    "$${NGX_CONF_FLAGS[@]}" \
	    --with-cc-opt="$(NGX_CC_OPT)" --with-ld-opt="$(NGX_LD_OPT)" \
	    --add-dynamic-module=$(CURDIR)' > configure.log 2>&1 \
	    || { tail -n 30 $(NGX_DIR)/configure.log >&2; exit 1; }
	@touch $@

# nginx's own Makefile knows the module's sources and headers; the embedded
# Lua scripts are rewritten only when they change
module: $(NGX_DIR)/objs/Makefile
	sh ngx_gov_pay_module/scripts/embed.sh \
	    $(NGX_DIR)/objs/ngx_gov_pay_scripts.c $(LUA_SCRIPTS)
	sh ngx_gov_pay_module/scripts/embed-templates.sh \
	    $(NGX_DIR)/objs/ngx_gov_pay_templates.c $(TEMPLATES)
	$(MAKE) -C $(NGX_DIR) -f objs/Makefile modules

# -- common/ -----------------------------------------------------------------

common: $(COMMON_LIB)

$(COMMON_LIB): $(COMMON_OBJS)
	@mkdir -p $(@D)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/obj/common/%.o: common/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -fPIC -MMD -MP -Icommon -c $< -o $@

# -- the worker --------------------------------------------------------------

worker: $(WORKER)

$(WORKER): $(WORKER_OBJS) $(COMMON_LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) $(WORKER_OBJS) $(COMMON_LIB) $(WORKER_LIBS) -o $@

$(BUILD)/obj/gp_scripts.c: $(WORKER_LUA) ngx_gov_pay_module/scripts/embed.sh
	@mkdir -p $(@D)
	sh ngx_gov_pay_module/scripts/embed.sh -s gp_scripts $@ $(WORKER_LUA)

$(BUILD)/obj/gp_scripts.o: $(BUILD)/obj/gp_scripts.c
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/workers/%.o: workers/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -Icommon -Iworkers $(WORKER_INCS) -c $< -o $@

# -- gov-pay-ledger: verifies ledgers and receipts (docs/receipts.md) ---------

ledger: $(LEDGER)

$(LEDGER): $(LEDGER_OBJS) $(COMMON_LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) $(LEDGER_OBJS) $(COMMON_LIB) -ljansson -lcrypto -o $@

$(BUILD)/obj/tools/%.o: tools/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -Icommon -c $< -o $@

# -- fuzzing (fuzz/: libFuzzer targets of every parser of outside input) ------

# clang's libFuzzer with AddressSanitizer and UBSan; common/ is compiled again
# with clang for it. `make fuzz` runs each target FUZZ_S seconds on a working
# copy of its corpus; t/fuzz_smoke.t (make test) replays each corpus and runs
# each target a few seconds.
FUZZ_CC      ?= clang
FUZZ_S       ?= 60
FUZZ_DIR     := $(BUILD)/fuzz
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS  := -g -O1 -fno-omit-frame-pointer $(FUZZ_SAN) -Icommon
FUZZ_SRCS    := $(wildcard fuzz/fuzz_*.c)
FUZZ_TARGETS := $(FUZZ_SRCS:fuzz/%.c=$(FUZZ_DIR)/%)
FUZZ_COMMON  := $(COMMON_SRCS:common/%.c=$(FUZZ_DIR)/obj/%.o)

fuzz-build: $(FUZZ_TARGETS)

$(FUZZ_DIR)/obj/%.o: common/%.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_DIR)/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz.h $(FUZZ_COMMON)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(FUZZ_COMMON) \
	    $(COMMON_LIBS) -o $@

fuzz:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory fuzz-build
	@bash fuzz/run.sh $(FUZZ_DIR) $(FUZZ_S)

# -- C unit tests ------------------------------------------------------------

unit: $(TEST_COMMON) $(SEAL_TOOL)

# gp_seal on the command line, for the tests that read sealed receipts
$(SEAL_TOOL): $(BUILD)/obj/common/tests/seal_tool.o $(COMMON_LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) $< $(COMMON_LIB) $(COMMON_LIBS) -o $@

$(TEST_COMMON): $(BUILD)/obj/common/tests/test_common.o $(COMMON_LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) $< $(COMMON_LIB) $(COMMON_LIBS) -lpthread -o $@

-include $(COMMON_OBJS:.o=.d) $(WORKER_OBJS:.o=.d) $(LEDGER_OBJS:.o=.d) \
         $(BUILD)/obj/common/tests/test_common.d \
         $(BUILD)/obj/common/tests/seal_tool.d

# -- tests -------------------------------------------------------------------

# playwright-core and axe-core for t/browser.t, exactly as package-lock.json
# says, installed from the npm registry once (again when the lock changes)
BROWSER_DIR := t/browser

browser-deps: $(BROWSER_DIR)/node_modules/.package-lock.json

$(BROWSER_DIR)/node_modules/.package-lock.json: $(BROWSER_DIR)/package-lock.json
	cd $(BROWSER_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# the t/ harness finds the build through GOV_PAY_BUILD (default: build)
test:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory build
	@$(MAKE) --no-print-directory fuzz-build
	@$(MAKE) --no-print-directory browser-deps
	GOV_PAY_BUILD=$(BUILD) $(PROVE) -r t/

# an ASan+UBSan build in build-asan/ and the tests against it. Debian's nginx
# is not built with ASan: the tests run it through a wrapper that preloads the
# ASan runtime (leak checks off for nginx, whose pools live until exit; on for
# the worker and the C unit tests).
ASAN_NGINX := build-asan/nginx-asan

# the worker tests with every worker under valgrind's memcheck: a report of
# an error or a leak (a non-empty log in build/valgrind/) fails the target
VALGRIND_TESTS := t/worker_receipt.t t/receipt_issue.t t/receipt_reversal.t \
                  t/notify_delivery.t t/notify_retry.t t/retention.t \
                  t/redis_access.t t/personal_data.t t/refund_receipts.t \
                  t/refund_channels.t t/refund_crash.t t/notify_refunds.t \
                  t/anomaly_cases.t

valgrind:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory build
	rm -rf build/valgrind
	GOV_PAY_BUILD=$(BUILD) GOV_PAY_VALGRIND=$(CURDIR)/build/valgrind \
	    $(PROVE) $(VALGRIND_TESTS)
	@bad=$$(find build/valgrind -name 'worker-*.log' -size +0 2>/dev/null); \
	if [ -n "$$bad" ]; then cat $$bad; echo "valgrind: reports in $$bad" >&2; \
	    exit 1; fi; \
	echo "valgrind: $$(ls build/valgrind | wc -l) worker processes, no error, no leak"

asan:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory browser-deps
	@$(MAKE) --no-print-directory SANITIZE=1 BUILD=build-asan build fuzz-build \
	    $(ASAN_NGINX)
	@$(MAKE) --no-print-directory BUILD=build-asan fuzz-build
	GOV_PAY_BUILD=build-asan TEST_NGINX_BINARY=$(CURDIR)/$(ASAN_NGINX) \
	ASAN_OPTIONS="$${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}" \
	UBSAN_OPTIONS="$${UBSAN_OPTIONS:-print_stacktrace=1}" \
	    $(PROVE) -r t/

# benchmarks print figures; they are never timed tests (README, "Figures").
# bench/edge.pl: the edge's routes (docs/performance.md); BENCH_EDGE_ARGS
# e.g. "--secs 10" or "--long" (RSS over a million requests)
bench:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory build bench-tools
	$(BENCH_TOOLS_DIR)/crypto 1
	GOV_PAY_BUILD=$(BUILD) perl bench/edge.pl $(BENCH_EDGE_ARGS)
	GOV_PAY_BUILD=$(BUILD) bash bench/receipts.sh
	GOV_PAY_BUILD=$(BUILD) perl bench/notify.pl $(BENCH_ARGS)
	GOV_PAY_BUILD=$(BUILD) perl bench/memory.pl

$(ASAN_NGINX): Makefile
	@mkdir -p $(@D)
	{ echo '#!/bin/sh'; \
	  echo '# /usr/sbin/nginx with the ASan runtime preloaded (make asan)'; \
	  echo 'LD_PRELOAD="'"$$($(CC) -print-file-name=libasan.so)"'$${LD_PRELOAD:+ $$LD_PRELOAD}"'; \
	  echo 'ASAN_OPTIONS="$${GOV_PAY_NGINX_ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}"'; \
	  echo 'export LD_PRELOAD ASAN_OPTIONS'; \
	  echo 'exec /usr/sbin/nginx "$$@"'; } > $@.tmp
	chmod +x $@.tmp
	mv $@.tmp $@

# -- benchmark tools ---------------------------------------------------------

# bench/crypto.c: codes, HMACs and digests per second of CPU (common/);
# bench/codes.c: the payment codes of the benchmark's notices (bench/edge.pl)
BENCH_TOOLS_DIR := $(BUILD)/bench
BENCH_TOOLS     := $(BENCH_TOOLS_DIR)/crypto $(BENCH_TOOLS_DIR)/codes

bench-tools: $(BENCH_TOOLS)

$(BENCH_TOOLS_DIR)/%: bench/%.c $(COMMON_LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Icommon $(LDFLAGS) $< $(COMMON_LIB) $(COMMON_LIBS) -o $@

# -- benchmark ---------------------------------------------------------------

# receipts issued per second per worker process, beside `openssl speed sm2`
# -- demo --------------------------------------------------------------------

demo:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory build
	@bash scripts/demo.sh up

demo-notice:
	@bash scripts/demo.sh notice

demo-stop:
	@bash scripts/demo.sh stop

# -- benchmarks (print figures; never timed tests) ----------------------------



# webhook delivery throughput of one worker process (bench/notify.pl);
# BENCH_ARGS e.g. "20000 --subscriber --fsync=everysec"
bench-notify:
	@$(MAKE) --no-print-directory build
	GOV_PAY_BUILD=$(BUILD) perl bench/notify.pl $(BENCH_ARGS)

bench-receipts:
	@$(MAKE) --no-print-directory build
	GOV_PAY_BUILD=$(BUILD) bash bench/receipts.sh

# Redis memory per notice, unpaid and paid+receipted (bench/memory.pl);
# BENCH_ARGS e.g. "--notices 5000 --receipts 2000"
bench-memory:
	@$(MAKE) --no-print-directory build
	GOV_PAY_BUILD=$(BUILD) perl bench/memory.pl $(BENCH_ARGS)

# -- Debian packages ---------------------------------------------------------

# libnginx-mod-http-gov-pay and gov-pay-worker (debian/), built with
# dpkg-buildpackage in a copy of the tree (build/deb/src/: the files git
# knows plus new ones it does not ignore), never in $(BUILD); the .debs land
# in build/deb/. `make deb-test` installs them in a fresh debootstrap chroot
# and pays a notice there (t/packaging/chroot-install.sh; not part of
# `make test`: it needs debootstrap, the network to Debian's mirror and
# minutes).
DEB_DIR := build/deb

.PHONY: deb deb-test

deb:
	@bash scripts/install-deps.sh deb
	rm -rf $(DEB_DIR)
	mkdir -p $(DEB_DIR)/src/gov-pay
	git ls-files -z --cached --others --exclude-standard \
	    | while IFS= read -r -d '' f; do \
	        if [ -e "$$f" ]; then printf '%s\0' "$$f"; fi; done \
	    | tar --null -cf - -T - | tar -xf - -C $(DEB_DIR)/src/gov-pay
	cd $(DEB_DIR)/src/gov-pay && dpkg-buildpackage -b -us -uc \
	    > ../build.log 2>&1 || { tail -n 40 ../build.log >&2; exit 1; }
	mv $(DEB_DIR)/src/*.deb $(DEB_DIR)/
	@ls -1 $(DEB_DIR)/*.deb

deb-test:
	@bash scripts/install-deps.sh deb-test
	@test -n "$$(ls $(DEB_DIR)/*.deb 2>/dev/null)" \
	    || $(MAKE) --no-print-directory deb
	bash t/packaging/chroot-install.sh $(DEB_DIR)

# -- housekeeping ------------------------------------------------------------

clean:
	@if [ -d build/demo ]; then bash scripts/demo.sh stop; fi
	rm -rf build build-asan

format:
	@command -v clang-format >/dev/null || { \
	    echo "clang-format is missing: apt-get install clang-format" >&2; \
	    exit 1; }
	clang-format -i $(FORMAT_SRCS)
