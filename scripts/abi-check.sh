#!/usr/bin/env bash
# The ABI gate: compare the ABI of libgptq.so.0 built from this tree with the committed
# baseline in abi/ (libabigail's abidw/abidiff, Debian abigail-tools).
#
#   bash scripts/abi-check.sh            # build, compare, exit 1 on an incompatible change
#   bash scripts/abi-check.sh --update   # build and write the baseline from this tree
#   bash scripts/abi-check.sh --lib PATH # use an already built libgptq.so.0 (with -g)
#   bash scripts/abi-check.sh --self-test  # check the gate's own verdicts on toy libraries
#
# Baseline: abi/libgptq.so.0.abi (abidw of a Release build with -g: functions and the
# types reachable from them) and abi/constants.txt (every GPTQ_* integer constant of
# the public headers with its value: status codes, backends, formats, dtypes...).
#
# Policy (docs/ABI.md): within SONAME libgptq.so.0, functions, constants and members
# appended at the end of option structs that begin with `struct_size` may be added.
# The gate fails on:
#   - anything abidiff itself calls incompatible (exit bit 8: a removed function or
#     variable, a changed SONAME ...);
#   - a changed function type (a parameter or the return type);
#   - a struct the public headers define that changed other than by appending members
#     (a member moved, went away or changed type), or that changed at all without being
#     versioned by `struct_size` (gptq_packed, gptq_unpacked, gptq_tensor_info are
#     allocated by callers at their compiled size);
#   - a constant that changed value or went away (status codes are pinned forever).
# Every abidiff report is printed, so a reviewer also sees the compatible changes.
#
# Environment: ABI_BUILD_DIR (default build-abi), JOBS (default 2), CC (default cc).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

abi_dir=abi            # --abi-dir: where the baseline lives
headers_dir=include/gptq # --headers: the public headers (their parent is the -I path)
update=0
self_test=0
lib=
while (($#)); do
    case $1 in
    --update) update=1 ;;
    --self-test) self_test=1 ;;
    --lib)
        lib=${2:?--lib needs a path}
        shift
        ;;
    --abi-dir)
        abi_dir=${2:?--abi-dir needs a directory}
        shift
        ;;
    --headers)
        headers_dir=${2:?--headers needs a directory}
        shift
        ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "abi-check: unknown argument '$1'" >&2
        exit 2
        ;;
    esac
    shift
done

for tool in abidw abidiff python3 "${CC:-cc}"; do
    command -v "$tool" >/dev/null ||
        { echo "abi-check: $tool not found (apt-get install abigail-tools python3 gcc)" >&2; exit 1; }
done

tmp=$(mktemp -d /tmp/gptq-abi.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
baseline=$abi_dir/libgptq.so.0.abi
baseline_constants=$abi_dir/constants.txt

# ---- self-test: the verdicts on a toy library with known changes ----------------------
if ((self_test)); then
    # Version 1 of a toy API: a constant, a versioned options struct, a caller-allocated
    # buffer struct, two functions. Each case below edits it and says what the gate must
    # answer (0 pass, 1 fail).
    toy() { # toy NAME [h:|c:]SED-EXPRESSION...: $tmp/NAME/include/gptq/toy.h, libtoy.so
        local dir=$tmp/$1
        shift
        mkdir -p "$dir/include/gptq"
        cat >"$dir/include/gptq/toy.h" <<'H'
#include <stdint.h>
#define GPTQ_TOY_LEVEL 2
typedef struct gptq_toy_opts {
    uint32_t struct_size;
    int32_t a;
    int64_t b;
} gptq_toy_opts;
typedef struct gptq_toy_buf {
    int32_t n;
    int32_t *p;
} gptq_toy_buf;
void gptq_toy_init(gptq_toy_opts *o);
int gptq_toy_use(const gptq_toy_opts *o, gptq_toy_buf *b, int32_t x);
H
        cat >"$dir/toy.c" <<'C'
#include "gptq/toy.h"
void gptq_toy_init(gptq_toy_opts *o) { o->struct_size = sizeof *o; o->a = 1; }
int gptq_toy_use(const gptq_toy_opts *o, gptq_toy_buf *b, int32_t x) { return o->a + b->n + (int)x; }
C
        local e
        for e in "$@"; do
            case $e in
            h:*) sed -i "${e#h:}" "$dir/include/gptq/toy.h" ;;
            c:*) sed -i "${e#c:}" "$dir/toy.c" ;;
            esac
        done
        "${CC:-cc}" -g -O0 -shared -fPIC -I"$dir/include" -Wl,-soname,libgptq.so.0 \
            "$dir/toy.c" -o "$dir/libtoy.so"
    }
    check() { # check EXPECTED NAME
        local rc=0
        bash "$0" --lib "$tmp/$2/libtoy.so" --headers "$tmp/$2/include/gptq" \
            --abi-dir "$tmp/abi" >"$tmp/$2.log" 2>&1 || rc=$?
        if ((rc != $1)); then
            cat "$tmp/$2.log" >&2
            echo "abi-check self-test: case '$2' gave $rc, expected $1" >&2
            exit 1
        fi
        if ((rc)); then
            echo "  $2: refused: $(grep -m1 -E '^  - |abidiff exit status' "$tmp/$2.log" |
                sed 's/^  - //')"
        else
            echo "  $2: accepted"
        fi
    }
    toy base
    bash "$0" --update --lib "$tmp/base/libtoy.so" --headers "$tmp/base/include/gptq" \
        --abi-dir "$tmp/abi" >/dev/null
    toy unchanged
    # shellcheck disable=SC2016 # sed's $a (append after the last line), not a variable
    toy added_function_and_constant \
        'h:s|^int gptq_toy_use.*|&\nint gptq_toy_new(void);\n#define GPTQ_TOY_NEW 7|' \
        'c:$a int gptq_toy_new(void) { return 7; }'
    toy appended_to_versioned 'h:s|^    int64_t b;|&\n    double c;|'
    toy inserted_into_versioned 'h:s|^    int32_t a;|&\n    int32_t pad;|'
    toy appended_to_unversioned 'h:s|^    int32_t \*p;|&\n    int32_t m;|'
    toy removed_function 'h:/^int gptq_toy_use/d' 'c:/^int gptq_toy_use/d'
    toy changed_parameter 'h:s|int32_t x)|int64_t x)|' 'c:s|int32_t x)|int64_t x)|'
    toy changed_constant 'h:s|GPTQ_TOY_LEVEL 2|GPTQ_TOY_LEVEL 3|'
    echo "abi-check self-test:"
    check 0 unchanged
    check 0 added_function_and_constant
    check 0 appended_to_versioned
    check 1 inserted_into_versioned
    check 1 appended_to_unversioned
    check 1 removed_function
    check 1 changed_parameter
    check 1 changed_constant
    echo "abi-check self-test: 8 cases, every verdict as expected"
    exit 0
fi

# ---- the current ABI ----------------------------------------------------------------

# A Release build with debug information: abidw reads the types from DWARF.
if [[ -z $lib ]]; then
    build=${ABI_BUILD_DIR:-build-abi}
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS=-g \
        -DGPTQ_BUILD_TESTS=OFF -DGPTQ_BUILD_CLI=OFF -DGPTQ_BUILD_EXAMPLES=OFF \
        -DGPTQ_BUILD_BENCH=OFF >/dev/null
    cmake --build "$build" --target gptq -j"${JOBS:-2}" >/dev/null
    lib=$build/libgptq.so.0
fi
[[ -f $lib ]] || { echo "abi-check: no library at $lib" >&2; exit 1; }

# Only the types reachable from the public headers, without build paths, so the file
# is the same on every machine that builds the same tree.
abidw --headers-dir "$headers_dir" --drop-private-types --no-corpus-path \
    --no-comp-dir-path --short-locs --type-id-style hash --out-file "$tmp/current.abi" "$lib"

# Constants are not in the binary: list every GPTQ_* integer constant of the headers
# (#define NAME <integer> and enumerators NAME = <integer>) as the compiler evaluates
# it. The version macros are meant to change and are left out.
names=$(cat "$headers_dir"/*.h |
    sed -nE 's/^#define (GPTQ_[A-Z0-9_]+) +-?[0-9]+( .*)?$/\1/p
             s/^ *(GPTQ_[A-Z0-9_]+) = -?[0-9]+.*/\1/p' |
    grep -v '^GPTQ_VERSION_' | sort -u)
{
    echo '#include <stdio.h>'
    for h in "$headers_dir"/*.h; do echo "#include <gptq/$(basename "$h")>"; done
    echo 'int main(void)'
    echo '{'
    for n in $names; do printf '    printf("%%s %%lld\\n", "%s", (long long)%s);\n' "$n" "$n"; done
    echo '    return 0;'
    echo '}'
} >"$tmp/constants.c"
"${CC:-cc}" -std=c11 -I"$headers_dir/.." "$tmp/constants.c" -o "$tmp/constants"
"$tmp/constants" >"$tmp/constants.txt"

nsyms() { grep -c '<elf-symbol ' "$1"; }

if ((update)); then
    mkdir -p "$abi_dir"
    cp "$tmp/current.abi" "$baseline"
    cp "$tmp/constants.txt" "$baseline_constants"
    echo "abi-check: wrote $baseline ($(nsyms "$baseline") symbols) and" \
        "$baseline_constants ($(wc -l <"$baseline_constants") constants)"
    exit 0
fi
for f in "$baseline" "$baseline_constants"; do
    [[ -f $f ]] || { echo "abi-check: no baseline $f (run with --update)" >&2; exit 1; }
done

# ---- constants ------------------------------------------------------------------------

failed=0
# Lines of the baseline missing from the current list: a constant gone or changed.
lost=$(sort "$baseline_constants" | comm -23 - <(sort "$tmp/constants.txt"))
if [[ -n $lost ]]; then
    echo "abi-check: constants changed or removed (baseline value shown):" >&2
    sed 's/^/  - /' <<<"$lost" >&2
    failed=1
fi
added=$(sort "$tmp/constants.txt" | comm -23 - <(sort "$baseline_constants") | wc -l)

# ---- functions and types ----------------------------------------------------------------

rc=0
abidiff --no-corpus-path "$baseline" "$tmp/current.abi" >"$tmp/full.txt" || rc=$?
if ((rc & 3)); then
    cat "$tmp/full.txt" >&2
    echo "abi-check: abidiff failed (exit status $rc)" >&2
    exit 1
fi
if ((rc != 0)); then
    cat "$tmp/full.txt"
fi
if ((rc & 8)); then
    echo "abi-check: incompatible ABI change (abidiff exit status $rc)" >&2
    failed=1
elif ((rc & 4)); then
    # abidiff calls every other change "an ABI change": judge each leaf change.
    abidiff --no-corpus-path --leaf-changes-only "$baseline" "$tmp/current.abi" \
        >"$tmp/leaf.txt" || true
    # Structs the public headers define (the others are opaque there: their layout is
    # private), and those of them versioned by struct_size (first member struct_size).
    headers=$(cat "$headers_dir"/*.h | tr '\n' ' ')
    public=$(grep -oE 'struct [a-z0-9_]+ \{' <<<"$headers" | awk '{ print $2 }' | sort -u |
        tr '\n' ' ')
    versioned=$(grep -oE 'struct [a-z0-9_]+ \{ *uint32_t struct_size;' <<<"$headers" |
        awk '{ print $2 }' | sort -u | tr '\n' ' ')
    python3 - "$tmp/leaf.txt" "$public" "$versioned" "$baseline" <<'PY' ||
import re
import sys
import xml.etree.ElementTree as ET

text = open(sys.argv[1]).read()
public, versioned = set(sys.argv[2].split()), set(sys.argv[3].split())
# The offset of the last member of each struct in the baseline: a member inserted at
# or before it (into padding, say) is not appended.
last = {}
for decl in ET.parse(sys.argv[4]).getroot().iter("class-decl"):
    offsets = [int(m.get("layout-offset-in-bits", "0")) for m in decl.findall("data-member")]
    if offsets:
        last[decl.get("name")] = max(offsets)
# Inside a versioned struct's report these mean a member moved, went away or changed
# its type (the struct's own "type size changed" line, indented by two, is allowed).
BREAKS = re.compile(r"offset changed|deletion|removed|name changed|size changed from")
bad = []
# After the summary, one block per changed artifact, each starting at a line with no
# indentation.
body = text.split("\n\n", 1)[1] if "\n\n" in text else ""
for block in re.split(r"\n(?=\S)", body):
    lines = block.split("\n")
    head, rest = lines[0], [l for l in lines[1:] if l.strip()]
    if not head.strip() or re.match(r"\d+ Added (function|variable)", head):
        continue  # additions are compatible
    m = re.match(r"'(struct|union) (\w+)", head)
    if m:
        kind, name = m.groups()
        if name not in public:
            continue  # opaque in the public headers
        if name not in versioned:
            bad.append("%s %s changed and is not versioned by struct_size" % (kind, name))
            continue
        own = [l for l in rest if not re.match(r"  type size changed from", l)]
        broken = [l.strip() for l in own if BREAKS.search(l)]
        for l in own:
            ins = re.match(r"\s*'.*', at offset (\d+) \(in bits\)", l)
            if ins and int(ins.group(1)) <= last.get(name, -1):
                broken.append("inserted before the last member: " + l.strip())
        if broken:
            bad.append("%s %s changed other than by appending members: %s"
                       % (kind, name, "; ".join(broken)))
        continue
    if re.match(r"'enum ", head):
        if any(re.search(r"enumerator (change|deletion)", l) for l in rest):
            bad.append("%s: an enumerator changed or was removed" % head.rstrip(":"))
        continue
    bad.append(head.strip() + (" " + rest[0].strip() if rest else ""))

if bad:
    print("abi-check: incompatible ABI changes:", file=sys.stderr)
    for b in bad:
        print("  - " + b, file=sys.stderr)
    sys.exit(1)
PY
        failed=1
fi

if ((failed)); then
    echo "abi-check: FAILED against $baseline (see docs/ABI.md; an intended break bumps" \
        "the SONAME, then: bash scripts/abi-check.sh --update)" >&2
    exit 1
fi
if ((rc == 0 && added == 0)); then
    echo "abi-check: ABI unchanged ($(nsyms "$baseline") symbols," \
        "$(wc -l <"$baseline_constants") constants)"
else
    echo "abi-check: compatible changes only:" \
        "$(($(nsyms "$tmp/current.abi") - $(nsyms "$baseline"))) symbols and $added constants" \
        "added ($(nsyms "$tmp/current.abi") symbols now; rerun with --update to take them" \
        "into the baseline)"
fi
