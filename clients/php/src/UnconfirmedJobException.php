<?php

declare(strict_types=1);

namespace Sockecho;

/**
 * submit() sent the whole job (and the half-close), then no answer came: the read timed out,
 * the connection was reset, or it closed without one. The daemon may have queued the job or
 * not, and nothing on this side can tell: the job was not handed to another daemon, since that
 * could run it twice. getPrevious() is the failure met; getAddress() the daemon it was sent to.
 * Submit it again only if the job tolerates running twice, or look for its effects first.
 */
class UnconfirmedJobException extends Exception
{
}
