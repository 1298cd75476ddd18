# Developer entry points; the rockspec is the real build.
#   make [LUA=5.1|5.3|5.4|luajit]   build and install the rock into build/$(LUA)
#   make test                       everything CI checks, on every Lua
#   make demo                       add a carrier through the local emulator
#   make bench                      throughput against the peers (minutes, noisy)
#   make bench-instructions         instructions per add (callgrind, ~30 s)
#   make dist                       release tarball + source rock of HEAD into dist/
#   make clean
# SPDX-License-Identifier: MIT

LUA      ?= 5.4
LUAS     ?= 5.4 5.3 5.1 luajit
ROCKSPEC := topcalls-scm-1.rockspec
WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Werror
CFLAGS   ?= -O2 -g
ROCK_CFLAGS = $(CFLAGS) -fPIC -fvisibility=hidden $(WARN)

# LuaJIT uses the 5.1 ABI with its own headers.
ifeq ($(LUA),luajit)
  ROCK_LUA  := 5.1
  ROCK_VARS := LUA_INCDIR=/usr/include/luajit-2.1
else
  ROCK_LUA  := $(LUA)
  ROCK_VARS :=
endif

SOURCES := $(wildcard src/*.c src/*.h lua/topcalls/*.lua bin/topcalls) $(ROCKSPEC)

.PHONY: all build deps deps-build deps-demo test demo clean check-hosts check-sanitize check-valgrind fuzz check-torture lint docs bench bench-instructions check-instructions dist check-dist

all: build

# Each target installs only the Debian packages it needs (tools/deps GROUP).
deps:
	@tools/deps test
deps-build:
	@tools/deps build
deps-demo:
	@tools/deps demo

build: deps-build build/$(LUA)/.stamp

build/$(LUA)/.stamp: $(SOURCES)
	@mkdir -p build
	flock build/.lock luarocks --lua-version=$(ROCK_LUA) --tree=build/$(LUA) make --deps-mode=none \
	    $(ROCKSPEC) CFLAGS="$(ROCK_CFLAGS)" $(ROCK_VARS) >build/$(LUA).log 2>&1 \
	    || { cat build/$(LUA).log; exit 1; }
	@rm -f src/*.o
	@touch $@

test: deps
	@for v in $(LUAS); do $(MAKE) --no-print-directory build LUA=$$v || exit 1; done
	@tools/test-all $(LUAS)

demo: deps-demo
	@$(MAKE) --no-print-directory build LUA=5.4
	@tools/demo

# Each check is a script that test-all also runs; these are shortcuts.
check-hosts check-sanitize check-valgrind check-torture: build
	@for v in $(LUAS); do $(MAKE) --no-print-directory build LUA=$$v || exit 1; done
	@tools/$@

FUZZ_SECONDS ?= 10
fuzz: deps
	@FUZZ_SECONDS=$(FUZZ_SECONDS) tools/check-fuzz

lint: deps
	@tools/check-lint

docs:
	@tools/deps docs
	@tools/docs

bench:
	@tools/deps bench
	@for v in $(LUAS); do $(MAKE) --no-print-directory build LUA=$$v || exit 1; done
	@bench/run

# Counts, not times: deterministic, so tools/check-instructions runs it in
# `make test` against bench/instructions.ceiling.
bench-instructions:
	@for v in 5.4 luajit; do $(MAKE) --no-print-directory build LUA=$$v || exit 1; done
	@bench/instructions

check-instructions:
	@for v in 5.4 luajit; do $(MAKE) --no-print-directory build LUA=$$v || exit 1; done
	@tools/check-instructions

# The release artifacts of the committed tree (git archive), reproducibly.
dist:
	@tools/dist dist

check-dist: deps
	@tools/check-dist

clean:
	rm -rf build dist topcalls src/*.o
