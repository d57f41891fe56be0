#!/bin/sh
# Runs every test binary given, adds up their "RESULT passed failed" lines and ends with
# the line "N passed, N failed". A binary that crashes or prints no RESULT counts as failed.
# OpenMP threads that spin make 2-thread runs far slower on a busy machine.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
passed=0; failed=0
for bin in "$@"; do
  echo "== $bin"
  out=$("$bin" 2>&1); rc=$?
  printf "%s\n" "$out" | grep -v "^RESULT" | grep -v "^PASS"
  printf "%s\n" "$out" | grep -c "^PASS" | sed 's/^/   checks passed: /'
  res=$(printf "%s\n" "$out" | grep '^RESULT' | tail -n 1)
  if [ -z "$res" ]; then
    echo "   $bin exited with $rc and printed no RESULT line"; failed=$((failed + 1)); continue
  fi
  p=$(echo "$res" | cut -d' ' -f2); f=$(echo "$res" | cut -d' ' -f3)
  passed=$((passed + p)); failed=$((failed + f))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then echo "   $bin exited with $rc"; failed=$((failed + 1)); fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
