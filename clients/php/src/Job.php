<?php

declare(strict_types=1);

namespace Sockecho;

/**
 * A job handed to a daemon: its id and the daemon that accepted it (its job address, as the
 * client names it: "127.0.0.1:12387", "[::1]:12387", "unix:/run/sockecho/sockecho.sock").
 *
 * Its string form, "ID@ADDRESS", is what an application stores (a database column, a URL, a
 * session) and gives back later to Job::fromString(), or straight to status(), result(),
 * cancel() and retry(), which take either. Knowing it is what lets anyone read or cancel the
 * job: keep it as private as the job's result.
 */
final class Job implements \Stringable
{
    /** The daemon's job ids: 1 to 64 of [A-Za-z0-9_-]. */
    public const ID_PATTERN = '/\A[A-Za-z0-9_-]{1,64}\z/';

    /** @throws \InvalidArgumentException for an id or address the daemon cannot have given */
    public function __construct(public readonly string $id, public readonly string $server)
    {
        if (preg_match(self::ID_PATTERN, $id) !== 1) {
            throw new \InvalidArgumentException('not a job id (1 to 64 of A-Z a-z 0-9 _ -): ' . json_encode($id, JSON_INVALID_UTF8_SUBSTITUTE));
        }
        if ($server === '' || preg_match('/[\x00-\x20\x7f]/', $server) === 1) {
            throw new \InvalidArgumentException('not a daemon address: ' . json_encode($server, JSON_INVALID_UTF8_SUBSTITUTE));
        }
    }

    /**
     * The job from its string form, "ID@ADDRESS" (what (string) $job gave).
     *
     * @throws \InvalidArgumentException for anything else
     */
    public static function fromString(string $text): self
    {
        $at = strpos($text, '@');
        if ($at === false) {
            throw new \InvalidArgumentException('not a job (ID@ADDRESS, as (string) $job gives it): ' . json_encode(substr($text, 0, 200), JSON_INVALID_UTF8_SUBSTITUTE));
        }
        return new self(substr($text, 0, $at), substr($text, $at + 1));
    }

    /** "ID@ADDRESS", e.g. "q3VbX0n_4T2kLw8sYc1JZA@127.0.0.1:12387". */
    public function __toString(): string
    {
        return "{$this->id}@{$this->server}";
    }
}
