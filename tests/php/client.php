<?php
// sockecho test helper: the blog post's PHP socket client, written the way the post writes it
// (socket_create, socket_connect, socket_write, socket_read in 8192-byte chunks), plus the one fix
// the post lacks: `socket_shutdown($socket, 1);` after writing, so the server sees end of stream
// and answers instead of both sides waiting for each other.
//
// Usage: php client.php HOST PORT [--no-shutdown] < message > reply
//   HOST           an IPv4 or IPv6 literal (IPv6 may be written [::1]) or a name; unix:PATH for
//                  a Unix-domain socket (PORT then unused)
//   --no-shutdown  behave like the post: skip the half-close; to keep that deadlock bounded, the
//                  read then gives up after 1 second (SO_RCVTIMEO) and the script exits 1.
// The message is all of stdin (binary safe). Only the reply bytes go to stdout; status lines go to
// stderr. Any failure exits 1 with socket_strerror(socket_last_error()) in the message.

set_time_limit(0);
// PHP's CLI prints warnings on stdout by default; stdout is for the reply bytes alone.
ini_set('display_errors', 'stderr');
ini_set('log_errors', '0');

function status($text)
{
    fwrite(STDERR, $text . "\n");
}

function fail($what, $socket = null)
{
    $code = $socket === null ? socket_last_error() : socket_last_error($socket);
    status("$what failed: " . socket_strerror($code));
    exit(1);
}

if ($argc < 3 || $argc > 4 || ($argc === 4 && $argv[3] !== '--no-shutdown')) {
    status("usage: php client.php HOST PORT [--no-shutdown] < message");
    exit(1);
}
$host = $argv[1];
if (strlen($host) > 1 && $host[0] === '[' && substr($host, -1) === ']') {
    $host = substr($host, 1, -1);
}
$port = (int) $argv[2];
$half_close = $argc < 4;

$in = file_get_contents('php://stdin');
if ($in === false) {
    status("reading the message from stdin failed");
    exit(1);
}

// 创建一个tcp流 (create a TCP stream), AF_INET6 for an IPv6 literal; a HOST of unix:PATH is a
// Unix-domain socket (sockecho-server --unix PATH), where PORT is not used.
$unix = str_starts_with($host, 'unix:') ? substr($host, 5) : null;
$domain = $unix !== null ? AF_UNIX
    : (filter_var($host, FILTER_VALIDATE_IP, FILTER_FLAG_IPV6) !== false ? AF_INET6 : AF_INET);
$socket = socket_create($domain, SOCK_STREAM, $unix !== null ? 0 : SOL_TCP) or fail("socket_create()");

if (!$half_close) {
    socket_set_option($socket, SOL_SOCKET, SO_RCVTIMEO, ["sec" => 1, "usec" => 0])
        or fail("socket_set_option(SO_RCVTIMEO)", $socket);
}

if ($unix !== null) {
    status("try to connect to $host...");
    socket_connect($socket, $unix) or fail("socket_connect()", $socket);
} else {
    status("try to connect to $host:$port...");
    socket_connect($socket, $host, $port) or fail("socket_connect()", $socket);
}

// socket_write may write only part of the data: loop until every byte is out.
$written = 0;
$total = strlen($in);
while ($written < $total) {
    $n = socket_write($socket, substr($in, $written), $total - $written);
    if ($n === false) {
        fail("socket_write()", $socket);
    }
    $written += $n;
}
status("发送成功! ($written bytes)");

// The fix the post lacks: tell the server the message is complete.
if ($half_close) {
    socket_shutdown($socket, 1) or fail("socket_shutdown()", $socket);
}

// Read until end of stream (''), not the post's `while ($buf = socket_read(...))`, which also
// stops at a chunk that is the string "0".
$out = '';
while (true) {
    $buf = socket_read($socket, 8192);
    if ($buf === false) {
        fail("socket_read()", $socket);
    }
    if ($buf === '') {
        break;
    }
    $out .= $buf;
}
socket_close($socket);

$done = 0;
$size = strlen($out);
while ($done < $size) {
    $n = fwrite(STDOUT, substr($out, $done));
    if ($n === false || $n === 0) {
        status("writing the reply to stdout failed");
        exit(1);
    }
    $done += $n;
}
fflush(STDOUT);
status("接受内容为 $size bytes");
exit(0);
