#!/usr/bin/perl

# The fuzz targets (fuzz/, make fuzz) as a smoke test: every parser of outside input is
# replayed over its committed corpus (the tests' inputs, and every input that ever crashed
# it) and fuzzed for a few seconds, under AddressSanitizer and UBSan. A finding fails here.
# The long runs are `make fuzz` (FUZZ_S seconds each).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Temp qw(tempdir);
use Test::More;
use GovPay::Test;

my $dir = GovPay::Test::build_dir() . '/fuzz';
my $corpus = GovPay::Test::repo_root() . '/fuzz/corpus';
my $secs = $ENV{GOV_PAY_FUZZ_SMOKE_S} // 3;

my @targets = sort glob("$dir/fuzz_*");
@targets = grep { -x $_ && !/\.log$/ } @targets;
ok scalar @targets >= 8, 'the fuzz targets are built (make fuzz-build)'
    or diag "none in $dir";

for my $bin (@targets) {
    (my $name = $bin) =~ s{.*/fuzz_}{};
    ok -d "$corpus/$name", "$name has a committed corpus";

    my $out = `'$bin' -runs=0 '$corpus/$name' 2>&1`;
    is $? >> 8, 0, "$name: every committed input (seeds and past crashes) is handled"
        or diag join "\n", grep { /ERROR|SUMMARY|runtime error/ } split /\n/, $out;

    my $work = tempdir('gov-pay-fuzz-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    system("cp '$corpus/$name'/* '$work'/ 2>/dev/null");
    $out = `'$bin' -max_total_time=$secs -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 -artifact_prefix='$work/' '$work' 2>&1`;
    my $rc = $? >> 8;
    my ($runs) = $out =~ /stat::number_of_executed_units:\s*(\d+)/;
    is $rc, 0, "$name: ${secs}s of fuzzing find nothing (" . ($runs // '?') . ' runs)'
        or diag join "\n", grep { /ERROR|SUMMARY|runtime error|Test unit written/ } split /\n/, $out;
}

done_testing;
