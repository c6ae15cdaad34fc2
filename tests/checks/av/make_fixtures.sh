#!/usr/bin/env bash
# Regenerate the ClamAV database fixtures in tests/checks/av/fixtures/clamav/.
#
# Every file is a real ClamAV container built by ClamAV's own `sigtool` (Debian package `clamav`),
# with `faketime` fixing the build time that sigtool writes into the 512-byte header:
#
#   main.cvd          version 62,    built 2021-09-16 12:32 UTC, flevel 90   (1 hash signature)
#   bytecode.cvd      version 335,   built 2024-05-07 14:55 UTC, flevel 90   (1 body signature)
#   daily.cvd         version 27450, built 2024-11-18 08:42 UTC, flevel 213  (2 signatures)
#   daily.cld         version 27451, built 2024-11-19 08:40 UTC, flevel 213  (3 signatures)
#   newer/daily.cvd   version 27452, built 2024-11-20 08:45 UTC, flevel 213  (4 signatures)
#
# daily.cld is made the way freshclam makes it on a live host: the daily.cvd above is unpacked, the
# incremental update script from 27450 to 27451 (`sigtool --diff`, what a .cdiff carries) is applied
# with `sigtool --run-cdiff`, and the result is packed as freshclam's buildcld() does it: the first
# line of daily.info, space-padded to 512 bytes, then an uncompressed tar of COPYING, daily.info and
# the signature files (Debian's freshclam.conf has `CompressLocalDatabase no`).
#
# Real bytecode.cvd files hold compiled .cbc bytecode, which needs clambc-compiler; `--hybrid` lets
# sigtool pack an ordinary signature file under the bytecode name, and the header is the same.
#
# Containers are unsigned (`--unsigned`): no one outside Cisco can sign a CVD, and the check reads
# only the header. Usage: tests/checks/av/make_fixtures.sh   (needs sigtool, faketime, GNU tar)
set -euo pipefail

export TZ=UTC LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
out="$here/fixtures/clamav"

for tool in sigtool faketime tar od; do
    command -v "$tool" >/dev/null || { echo "missing $tool (Debian: apt-get install clamav faketime)" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/empty" "$out/newer"

hex() { printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }

# build DIR NAME VERSION "YYYY-MM-DD HH:MM:SS" FLEVEL [extra sigtool flags...]
# Runs in DIR, which holds COPYING and the signature files; leaves NAME.cvd there.
build() {
    local dir=$1 name=$2 version=$3 when=$4 flevel=$5
    shift 5
    # sigtool asks for the builder name on stdin; an empty --datadir stops it looking for a
    # previous version (which would override --cvd-version) in /var/lib/clamav. It always complains
    # that the empty --datadir holds no previous version, so its output is shown only on failure.
    (cd "$dir" && echo vigil-fixtures | faketime "$when" sigtool --build="$name.cvd" --unsigned \
        --cvd-version="$version" --flevel="$flevel" --no-cdiff --datadir="$work/empty" "$@" \
        >"$work/sigtool.log" 2>&1) || { cat "$work/sigtool.log" >&2; exit 1; }
}

copying() { echo "Vigil test fixture: not a real ClamAV signature database." > "$1/COPYING"; }

# main.cvd: one MD5 hash signature.
mkdir "$work/main"
copying "$work/main"
printf 'Vigil main fixture\n' > "$work/main/sample"
(cd "$work/main" && sigtool --md5 sample | sed 's/:sample$/:Vigil.Test.Main-1/' > main.hdb && rm sample)
build "$work/main" main 62 "2021-09-16 12:32:00" 90
cp "$work/main/main.cvd" "$out/main.cvd"

# bytecode.cvd: see the note on --hybrid above.
mkdir "$work/bytecode"
copying "$work/bytecode"
echo "Vigil.Test.Bytecode-1:0:*:$(hex VigilTestBytecode1)" > "$work/bytecode/bytecode.ndb"
build "$work/bytecode" bytecode 335 "2024-05-07 14:55:00" 90 --hybrid
cp "$work/bytecode/bytecode.cvd" "$out/bytecode.cvd"

# daily.cvd 27450: one body signature, one hash signature.
mkdir "$work/daily"
copying "$work/daily"
echo "Vigil.Test.Daily-1:0:*:$(hex VigilTestDaily1)" > "$work/daily/daily.ndb"
printf 'Vigil daily fixture\n' > "$work/daily/sample"
(cd "$work/daily" && sigtool --md5 sample | sed 's/:sample$/:Vigil.Test.Daily-2/' > daily.hdb && rm sample)
build "$work/daily" daily 27450 "2024-11-18 08:42:00" 213
cp "$work/daily/daily.cvd" "$out/daily.cvd"

# daily 27451 as an incremental update of 27450, packed into daily.cld (see above).
cp -r "$work/daily" "$work/d27451"
rm "$work/d27451/daily.cvd" "$work/d27451/daily.info"
echo "Vigil.Test.Daily-3:0:*:$(hex VigilTestDaily3)" >> "$work/d27451/daily.ndb"
build "$work/d27451" daily 27451 "2024-11-19 08:40:00" 213
# sigtool names the script after the NEW argument, so that must be a bare file name.
(cd "$work/d27451" && sigtool --diff "$work/daily/daily.cvd" daily.cvd >/dev/null)
mkdir "$work/cld"
# A CVD is the 512-byte header followed by a gzipped tar.
tail -c +513 "$work/daily/daily.cvd" | tar -xzf - -C "$work/cld"
chmod 0644 "$work/cld"/*
(cd "$work/cld" && sigtool --run-cdiff="$work/d27451/daily-27451.script" >/dev/null)
{
    head -n 1 "$work/cld/daily.info" | tr -d '\n'
    printf '%512s' ''
} | head -c 512 > "$work/daily.cld"
(cd "$work/cld" && tar --format=ustar --blocking-factor=1 --owner=0 --group=0 --numeric-owner --mode=0644 \
    --mtime=@0 -cf - COPYING daily.info $(ls | grep -v -e '^COPYING$' -e '^daily.info$' | sort)) >> "$work/daily.cld"
cp "$work/daily.cld" "$out/daily.cld"

# newer/daily.cvd 27452: a full download that is newer than the daily.cld above.
cp -r "$work/d27451" "$work/d27452"
rm "$work/d27452/daily.cvd" "$work/d27452/daily.info" "$work/d27452/daily-27451.script"
echo "Vigil.Test.Daily-4:0:*:$(hex VigilTestDaily4)" >> "$work/d27452/daily.ndb"
build "$work/d27452" daily 27452 "2024-11-20 08:45:00" 213
cp "$work/d27452/daily.cvd" "$out/newer/daily.cvd"

# Prove libclamav can open each container, then show the headers.
for db in main.cvd bytecode.cvd daily.cvd daily.cld newer/daily.cvd; do
    sigtool --list-sigs="$out/$db" >/dev/null
    printf '%-16s %6s bytes  %s\n' "$db" "$(wc -c < "$out/$db")" "$(head -c 512 "$out/$db" | sed 's/ *$//')"
done
