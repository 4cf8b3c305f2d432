#!/usr/bin/env php
<?php

// A daemon that resets every connection, as sockecho-server does past its limits: it reads
// --after bytes of the request (in line mode after its greeting), then closes with SO_LINGER 0,
// which sends a reset (RST) instead of a clean close. Run by ClientTest.php like sockecho-server:
// reset_server.php --host HOST --port 0 [--after N] [--mode echo|line]; prints its ready line.
// One connection at a time, until it is killed.

declare(strict_types=1);

$options = getopt('', ['host:', 'port:', 'after:', 'mode:']);
$host = (string) ($options['host'] ?? '127.0.0.1');
$after = max(1, (int) ($options['after'] ?? 4));
$line = ($options['mode'] ?? 'echo') === 'line';

$listener = socket_create(AF_INET, SOCK_STREAM, SOL_TCP);
if ($listener === false || !socket_bind($listener, $host, (int) ($options['port'] ?? 0)) || !socket_listen($listener, 16)) {
    fwrite(STDERR, "reset_server: cannot listen\n");
    exit(1);
}
socket_getsockname($listener, $address, $port);
echo "listening on $address:$port\n";

while (($socket = socket_accept($listener)) !== false) {
    if ($line) {
        socket_write($socket, "connect\n");
    }
    $got = 0;
    while ($got < $after) {
        $chunk = socket_read($socket, $after - $got, PHP_BINARY_READ);
        if ($chunk === false || $chunk === '') {
            break;
        }
        $got += strlen($chunk);
    }
    socket_set_option($socket, SOL_SOCKET, SO_LINGER, ['l_onoff' => 1, 'l_linger' => 0]);
    socket_close($socket);
}
