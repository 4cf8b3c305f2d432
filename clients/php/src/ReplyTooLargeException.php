<?php

declare(strict_types=1);

namespace Sockecho;

/** The reply grew past the client's maxReplyBytes; it was not read further. The code is SOCKET_EMSGSIZE. */
class ReplyTooLargeException extends Exception
{
}
