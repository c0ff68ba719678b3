#!/usr/bin/perl

# webhook-server.pl: the units' side of the notify plugin in the tests (and the
# bench): an HTTP/1.1 server in one process with a select loop, so a request
# it lets hang never holds up another connection.
#
#   webhook-server.pl --port P --log FILE [--mode MODES]
#
# Every request but the control ones is appended to FILE as one JSON line
# {"t": <unix time, float>, "method", "path", "headers": {lower-case name:
# value}, "body", "answer"} once it has been read whole, then answered by the
# next mode:
#
#   200, 500, 204, ... (any 3 digits)   that status, body "ok"
#   hang                                no answer; the connection stays open
#   close                               the connection is closed, no answer
#
# MODES is a comma-separated list used one request each, the last one for
# every request after ("500,500,200": two failures, then success). Control:
# POST /_mode with MODES as the body replaces the list; GET /_ping answers
# 200. A refused connection is played by not running the server at all.
# --quiet does not log requests (the bench).

use strict;
use warnings;

use Getopt::Long;
use IO::Handle;
use IO::Select;
use IO::Socket::INET;
use JSON::XS;
use Socket qw(SOL_SOCKET SO_REUSEADDR);
use Time::HiRes qw(time);

my ($port, $log, $modes, $quiet) = (undef, undef, '200', 0);
GetOptions('port=i' => \$port, 'log=s' => \$log, 'mode=s' => \$modes,
           'quiet' => \$quiet) or die "bad arguments\n";
die "--port is required\n" unless $port;

my @modes = split /,/, $modes;
my $json = JSON::XS->new->utf8->canonical;

my $fh;
if (defined $log) {
    open $fh, '>>', $log or die "open $log: $!\n";
    $fh->autoflush(1);
}

my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port,
                                   Listen => 1024, ReuseAddr => 1, Proto => 'tcp')
    or die "listen on 127.0.0.1:$port: $!\n";
$listen->blocking(0);

$SIG{TERM} = $SIG{INT} = sub { exit 0 };
$SIG{PIPE} = 'IGNORE';

my $sel = IO::Select->new($listen);
my (%buf, %hung);

sub next_mode {
    return @modes > 1 ? shift @modes : $modes[0];
}

sub respond {
    my ($s, $status, $body) = @_;
    my $out = "HTTP/1.1 $status X\r\nContent-Type: text/plain\r\n"
        . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
    my $off = 0;
    while ($off < length $out) {
        my $w = syswrite($s, $out, length($out) - $off, $off);
        if (!defined $w) {
            next if $!{EAGAIN} || $!{EINTR};
            return 0;
        }
        $off += $w;
    }
    return 1;
}

sub drop {
    my ($s) = @_;
    $sel->remove($s);
    delete $buf{"$s"};
    delete $hung{"$s"};
    close $s;
}

# one complete request at the front of the buffer, or nothing yet
sub take_request {
    my ($s) = @_;
    my $b = \$buf{"$s"};
    my $end = index($$b, "\r\n\r\n");
    return undef if $end < 0;
    my $head = substr($$b, 0, $end);
    my ($line, @lines) = split /\r\n/, $head;
    my ($method, $path) = split / /, $line // '';
    my %h;
    for (@lines) {
        my ($k, $v) = split /:\s*/, $_, 2;
        $h{lc $k} = $v if defined $k;
    }
    my $len = $h{'content-length'} // 0;
    return undef if length($$b) < $end + 4 + $len;
    my $body = substr($$b, $end + 4, $len);
    substr($$b, 0, $end + 4 + $len) = '';
    return { method => $method, path => $path, headers => \%h, body => $body };
}

while (1) {
    for my $s ($sel->can_read(1)) {
        if ($s == $listen) {
            while (my $c = $listen->accept) {
                $c->blocking(0);
                $sel->add($c);
                $buf{"$c"} = '';
            }
            next;
        }

        my $n = sysread($s, my $chunk, 65536);
        if (!defined $n) {
            next if $!{EAGAIN} || $!{EINTR};
            drop($s);
            next;
        }
        if ($n == 0) {
            drop($s);
            next;
        }
        next if $hung{"$s"};    # only its close matters now
        $buf{"$s"} .= $chunk;

        while (defined(my $req = take_request($s))) {
            if ($req->{path} eq '/_mode') {
                @modes = split /,/, $req->{body};
                @modes = ('200') unless @modes;
                respond($s, 200, 'ok') or drop($s);
                last unless $sel->exists($s);
                next;
            }
            if ($req->{path} eq '/_ping') {
                respond($s, 200, 'pong') or drop($s);
                last unless $sel->exists($s);
                next;
            }

            my $mode = next_mode();
            if ($fh && !$quiet) {
                print {$fh} $json->encode({ t => time, %$req, answer => $mode }), "\n";
            }

            if ($mode eq 'hang') {
                $hung{"$s"} = 1;
                last;
            }
            if ($mode eq 'close') {
                drop($s);
                last;
            }
            $mode = 500 unless $mode =~ /^\d{3}$/;
            unless (respond($s, $mode, 'ok')) {
                drop($s);
                last;
            }
        }
    }
}
