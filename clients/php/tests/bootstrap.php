<?php

// PHPUnit's bootstrap for the client's tests: the client's own autoloader (no Composer needed to
// run them) and the test support.

declare(strict_types=1);

if (!extension_loaded('sockets')) {
    fwrite(STDERR, "this PHP lacks the sockets extension (Debian: apt-get install php-cli)\n");
    exit(77);
}
ini_set('memory_limit', '512M');

require __DIR__ . '/../autoload.php';
require __DIR__ . '/support.php';
