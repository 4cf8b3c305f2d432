// sockecho: everything, in one include.
#pragma once

#include "sockecho/address.hpp"
#include "sockecho/buffer.hpp"
#include "sockecho/client.hpp"
#include "sockecho/connection.hpp"
#include "sockecho/deadline.hpp"
#include "sockecho/error.hpp"
#include "sockecho/fd.hpp"
#include "sockecho/line.hpp"
#include "sockecho/listener.hpp"
#include "sockecho/log.hpp"
#include "sockecho/record.hpp"
#include "sockecho/server.hpp"
#include "sockecho/session.hpp"
#include "sockecho/signals.hpp"
#include "sockecho/systemd.hpp"
#include "sockecho/version.hpp"
