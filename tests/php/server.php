<?php
// sockecho test helper: the blog post's first PHP socket server, written the way the post writes
// it (socket_create, socket_set_block, socket_bind, socket_listen, a socket_accept loop, read in
// 8192-byte chunks until end of stream, reply "数据是 " . $out, socket_close), with the changes a
// test needs:
//   - the address comes from the command line, and port 0 picks a free port;
//   - once listening it prints one line on stdout, "listening on HOST:PORT" ([ADDR]:PORT for IPv6),
//     with the real port, and flushes it;
//   - SO_REUSEADDR is set;
//   - reads stop at end of stream ('') only, not at a chunk that is the string "0" as the post's
//     `while ($buf = socket_read(...))` does; writes loop until every byte is out;
//   - an optional count of connections to serve, after which it exits 0.
//
// Usage: php server.php HOST PORT [CONNECTIONS]
// Set-up errors print socket_strerror(...) on stderr and exit 1; a failing connection is reported on
// stderr, closed and counted, and the server goes on.

set_time_limit(0);
// PHP's CLI prints warnings on stdout by default; stdout is for the ready line alone.
ini_set('display_errors', 'stderr');
ini_set('log_errors', '0');

function fail($what, $socket = null)
{
    $code = $socket === null ? socket_last_error() : socket_last_error($socket);
    fwrite(STDERR, "$what failed: " . socket_strerror($code) . "\n");
    exit(1);
}

if ($argc < 3 || $argc > 4) {
    fwrite(STDERR, "usage: php server.php HOST PORT [CONNECTIONS]\n");
    exit(1);
}
// 设置主机和端口 (host and port)
$host = $argv[1];
$port = (int) $argv[2];
$limit = $argc === 4 ? (int) $argv[3] : -1;  // -1: serve forever

$ipv6 = filter_var($host, FILTER_VALIDATE_IP, FILTER_FLAG_IPV6) !== false;
// 创建一个tcp流 (create a TCP stream)
$socket = socket_create($ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM, SOL_TCP)
    or fail("socket_create()");

socket_set_option($socket, SOL_SOCKET, SO_REUSEADDR, 1)
    or fail("socket_set_option(SO_REUSEADDR)", $socket);

// 设置阻塞模式 (blocking mode)
socket_set_block($socket) or fail("socket_set_block()", $socket);

// 绑定到端口 (bind)
socket_bind($socket, $host, $port) or fail("socket_bind()", $socket);

// 开始监听 (listen)
socket_listen($socket, 4) or fail("socket_listen()", $socket);

socket_getsockname($socket, $bound_host, $bound_port) or fail("socket_getsockname()", $socket);
$shown = $ipv6 ? "[$bound_host]" : $bound_host;
fwrite(STDOUT, "listening on $shown:$bound_port\n");
fflush(STDOUT);

$served = 0;
while ($limit < 0 || $served < $limit) {
    // 接收连接请求 (accept a connection)
    $msgsock = socket_accept($socket);
    if ($msgsock === false) {
        fwrite(STDERR, "socket_accept() failed: " . socket_strerror(socket_last_error($socket)) . "\n");
        continue;
    }
    $served++;

    // 读数据 (read until the client half-closes)
    $out = '';
    $ok = true;
    while (true) {
        $buf = socket_read($msgsock, 8192);
        if ($buf === false) {
            fwrite(STDERR, "socket_read() failed: " . socket_strerror(socket_last_error($msgsock)) . "\n");
            $ok = false;
            break;
        }
        if ($buf === '') {
            break;
        }
        $out .= $buf;
    }

    // 写数据 (write the reply, every byte)
    if ($ok) {
        $in = "数据是 " . $out;
        $written = 0;
        $total = strlen($in);
        while ($written < $total) {
            $n = socket_write($msgsock, substr($in, $written), $total - $written);
            if ($n === false) {
                fwrite(STDERR, "socket_write() failed: " . socket_strerror(socket_last_error($msgsock)) . "\n");
                break;
            }
            $written += $n;
        }
        fwrite(STDERR, "connection $served: " . strlen($out) . " bytes in, $written bytes out\n");
    }

    // 结束通信 (close the connection)
    socket_close($msgsock);
}
socket_close($socket);
exit(0);
