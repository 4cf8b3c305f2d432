// The Unix-domain transport through the library: Listener::bind_unix()'s rules for the socket
// file (stale, in use, not a socket, removal, mode, group), adoption, credentials on the peer,
// echo and line mode served by a Server, and per-user counting. Each test in a ScratchDir.
#include <fcntl.h>
#include <grp.h>  // setgroups
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <vector>

#include "address_access.hpp"  // src/: the listener's own setter
#include "sockecho/address.hpp"
#include "sockecho/client.hpp"
#include "sockecho/connection.hpp"
#include "sockecho/listener.hpp"
#include "sockecho/protocol.hpp"
#include "sockecho/record.hpp"
#include "sockecho/server.hpp"
#include "support.hpp"

namespace sockecho {
namespace {

using test::kPatience;
using test::kPrefix;
using test::ScratchDir;
using test::ServerThread;

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;

struct stat status_of(const std::string& path) {
  struct stat status {};
  if (::lstat(path.c_str(), &status) != 0) throw std::system_error(errno, std::generic_category());
  return status;
}

Connection dial(const std::string& path) {
  Connection c = connect(Address::unix_path(path), {kPatience, {}});
  c.set_timeout(kPatience);
  return c;
}

std::string ask(const std::string& path, std::string_view message) {
  Connection c = dial(path);
  c.write_all(message);
  c.close_write();
  return c.read_to_end_string();
}

// A socket file nobody listens on: bound, then closed without listen(), as a crashed server
// leaves its file.
void leave_stale_socket(const std::string& path) {
  const Fd socket(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const Address address = Address::unix_path(path);
  ASSERT_EQ(::bind(socket.get(), address.data(), address.size()), 0)
      << std::generic_category().message(errno);
}

// A directory others may enter (a ScratchDir is 0700), so only the socket file's own mode
// decides who connects.
void open_to_all(const ScratchDir& dir) { ASSERT_EQ(::chmod(dir.path().c_str(), 0755), 0); }

// What a client running as user nobody (uid and gid 65534, no supplementary groups) got: the
// errno of its connect() (0: connected), and the reply to `message`.
struct NobodyResult {
  int connect_errno = -1;
  std::string reply;
};

// Forks a child that drops to nobody and connects; it only makes system calls (no allocation),
// as a child forked from a process with threads must.
NobodyResult connect_as_nobody(const std::string& path, std::string_view message) {
  const Address address = Address::unix_path(path);
  test::Pipe pipe = test::make_pipe();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork");
  if (pid == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(kNogroup) != 0 || ::setuid(kNobody) != 0) {
      ::_exit(100);
    }
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    int err = 0;
    if (::connect(fd, address.data(), address.size()) != 0) err = errno;
    (void)::write(pipe.write.get(), &err, sizeof err);
    if (err == 0) {
      (void)::send(fd, message.data(), message.size(), MSG_NOSIGNAL);
      ::shutdown(fd, SHUT_WR);
      std::array<char, 4096> chunk{};
      ssize_t n = 0;
      while ((n = ::read(fd, chunk.data(), chunk.size())) > 0) {
        (void)::write(pipe.write.get(), chunk.data(), static_cast<std::size_t>(n));
      }
    }
    ::_exit(0);
  }
  pipe.write.reset();
  NobodyResult result;
  const std::string got = test::read_all(pipe.read.get());
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  if (got.size() >= sizeof(int)) {
    std::memcpy(&result.connect_errno, got.data(), sizeof(int));
    result.reply = got.substr(sizeof(int));
  }
  return result;
}

std::shared_ptr<Protocol> echo() { return echo_protocol(prefix_handler(kPrefix)); }

TEST(UnixAddress, PathsAndAbstractNames) {
  const Address path = Address::unix_path("/run/sockecho/sockecho.sock");
  EXPECT_EQ(path.family(), AF_UNIX);
  EXPECT_EQ(path.path(), "/run/sockecho/sockecho.sock");
  EXPECT_EQ(path.to_string(), "unix:/run/sockecho/sockecho.sock");
  EXPECT_EQ(path.port(), 0);
  const Address abstract = Address::unix_path("@sockecho");
  EXPECT_EQ(abstract.path(), "@sockecho");
  EXPECT_EQ(abstract.to_string(), "unix:@sockecho");
  EXPECT_NE(abstract, Address::unix_path("sockecho"));
}

TEST(UnixAddress, RejectsWhatSunPathCannotHold) {
  EXPECT_NO_THROW((void)Address::unix_path(std::string(Address::kMaxUnixPath, 'a')));
  EXPECT_NO_THROW((void)Address::unix_path("@" + std::string(Address::kMaxUnixPath, 'a')));
  try {
    (void)Address::unix_path(std::string(Address::kMaxUnixPath + 1, 'a'));
    ADD_FAILURE() << "a 108-byte path was taken";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("at most 107"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)Address::unix_path(""), std::invalid_argument);
  EXPECT_THROW((void)Address::unix_path("@"), std::invalid_argument);
  EXPECT_THROW((void)Address::unix_path(std::string("a\0b", 3)), std::invalid_argument);
}

// Whether T has a set_credentials() a caller of the public API could call.
template <typename T, typename = void>
struct HasPublicSetCredentials : std::false_type {};
template <typename T>
struct HasPublicSetCredentials<
    T, std::void_t<decltype(std::declval<T&>().set_credentials(Credentials{}))>> : std::true_type {
};

TEST(UnixAddress, NoCallerCanSetCredentials) {
  // Only the listener that accepted a Unix-domain connection records who the peer is (from
  // SO_PEERCRED); a public setter would let any caller forge the per-source key.
  static_assert(!HasPublicSetCredentials<Address>::value);
  EXPECT_FALSE(Address::unix_path("/x.sock").credentials().has_value());
}

TEST(UnixAddress, APeerWithCredentialsIsNamedAndCountedByUser) {
  using detail::AddressAccess;
  Address peer = Address::unix_path("/x.sock");
  AddressAccess::set_credentials(peer, {4711, 33, 34});
  EXPECT_EQ(peer.to_string(), "unix:uid=33,pid=4711");
  Address same_user = Address::unix_path("/y.sock");
  AddressAccess::set_credentials(same_user, {4712, 33, 0});
  Address other_user = same_user;
  AddressAccess::set_credentials(other_user, {4712, 34, 0});
  EXPECT_EQ(peer.source_key(), same_user.source_key());
  EXPECT_NE(peer.source_key(), other_user.source_key());
  // Never the key of an IPv4 address (4 bytes) or an IPv6 one (16).
  EXPECT_NE(peer.source_key().size(), 4U);
  EXPECT_NE(peer.source_key().size(), 16U);
}

TEST(UnixListener, EchoModeThroughAServerNamesThePeerByUidAndPid) {
  const ScratchDir dir;
  const std::string path = dir.file("echo.sock");
  ServerThread server(Listener::bind_unix(path), {}, echo());
  EXPECT_EQ(server.server().address().to_string(), "unix:" + path);
  EXPECT_EQ(ask(path, "hello over unix"), kPrefix + "hello over unix");
  const std::string big = test::pattern(std::size_t{4} << 20);
  EXPECT_EQ(ask(path, big), kPrefix + big);
  ASSERT_TRUE(server.wait_finished(2));
  const ConnectionRecord record = server.records().at(0);
  EXPECT_EQ(format_record(record).rfind("conn peer=unix:uid=" + std::to_string(::getuid()) +
                                            ",pid=" + std::to_string(::getpid()) + " in=15 ",
                                        0),
            0U)
      << format_record(record);
}

TEST(UnixListener, LineModeThroughAServer) {
  const ScratchDir dir;
  const std::string path = dir.file("line.sock");
  ServerThread server(Listener::bind_unix(path), {},
                      line_protocol(prefix_handler("> "), Limits{}, "connect"));
  Connection c = dial(path);
  c.write_all("one\ntwo\nlast");
  c.close_write();
  EXPECT_EQ(c.read_to_end_string(), "connect\n> one\n> two\n> last\n");
}

TEST(UnixListener, EachSideLearnsTheOthersCredentials) {
  const ScratchDir dir;
  Listener listener = Listener::bind_unix(dir.file("cred.sock"));
  Connection client = dial(dir.file("cred.sock"));
  std::optional<Connection> accepted = listener.accept();
  ASSERT_TRUE(accepted);
  ASSERT_TRUE(accepted->peer().credentials());
  EXPECT_EQ(accepted->peer().credentials()->pid, ::getpid());
  EXPECT_EQ(accepted->peer().credentials()->uid, ::geteuid());
  EXPECT_EQ(accepted->peer().credentials()->gid, ::getegid());
  const std::optional<Credentials> server = client.peer_credentials();
  ASSERT_TRUE(server);
  EXPECT_EQ(server->pid, ::getpid());
  EXPECT_EQ(client.peer().to_string(), "unix:" + dir.file("cred.sock"));
}

TEST(UnixListener, AStaleSocketFileIsReplaced) {
  const ScratchDir dir;
  const std::string path = dir.file("stale.sock");
  leave_stale_socket(path);
  ASSERT_EQ(::chmod(path.c_str(), 0700), 0);  // told apart from the new one (inodes are reused)
  ServerThread server(Listener::bind_unix(path), {}, echo());
  EXPECT_EQ(status_of(path).st_mode & 07777, 0660U);
  EXPECT_EQ(ask(path, "fresh"), kPrefix + "fresh");
}

TEST(UnixListener, APathWhereAServerListensIsInUseAndStaysItsOwn) {
  const ScratchDir dir;
  const std::string path = dir.file("busy.sock");
  ServerThread first(Listener::bind_unix(path), {}, echo());
  const ino_t inode = status_of(path).st_ino;
  try {
    (void)Listener::bind_unix(path);
    ADD_FAILURE() << "a second listener took the path";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::address_in_use);
    EXPECT_NE(std::string(e.what()).find("in use"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("unix:" + path), std::string::npos) << e.what();
  }
  EXPECT_EQ(status_of(path).st_ino, inode);
  EXPECT_EQ(ask(path, "still mine"), kPrefix + "still mine");
}

TEST(UnixListener, APathThatIsNotASocketIsLeftUntouched) {
  const ScratchDir dir;
  const std::string file = dir.file("data.txt");
  std::ofstream(file) << "precious";
  ASSERT_EQ(::chmod(file.c_str(), 0640), 0);
  try {
    (void)Listener::bind_unix(file);
    ADD_FAILURE() << "bound over a regular file";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::file_exists);
    EXPECT_NE(std::string(e.what()).find("not a socket"), std::string::npos) << e.what();
  }
  EXPECT_EQ(dir.read("data.txt"), "precious");
  EXPECT_EQ(status_of(file).st_mode & 07777, 0640U);

  // A symbolic link is not followed, even to a stale socket.
  leave_stale_socket(dir.file("target.sock"));
  ASSERT_EQ(::symlink(dir.file("target.sock").c_str(), dir.file("link.sock").c_str()), 0);
  EXPECT_THROW((void)Listener::bind_unix(dir.file("link.sock")), std::system_error);
  EXPECT_TRUE(S_ISLNK(status_of(dir.file("link.sock")).st_mode));
  EXPECT_TRUE(S_ISSOCK(status_of(dir.file("target.sock")).st_mode));

  ASSERT_EQ(::mkdir(dir.file("a-directory").c_str(), 0700), 0);
  EXPECT_THROW((void)Listener::bind_unix(dir.file("a-directory")), std::system_error);
  EXPECT_TRUE(S_ISDIR(status_of(dir.file("a-directory")).st_mode));
}

TEST(UnixListener, TheFileIsRemovedWithTheListenerButNotAnotherOne) {
  const ScratchDir dir;
  const std::string path = dir.file("mine.sock");
  {
    ServerThread server(Listener::bind_unix(path), {}, echo());
    EXPECT_TRUE(test::exists(path));
  }
  EXPECT_FALSE(test::exists(path)) << "a clean stop removes the file";

  // A listener whose file was replaced meanwhile leaves the new one alone.
  std::optional<Listener> old = Listener::bind_unix(path);
  ASSERT_EQ(::unlink(path.c_str()), 0);
  const Listener replacement = Listener::bind_unix(path);
  const ino_t inode = status_of(path).st_ino;
  old.reset();
  ASSERT_TRUE(test::exists(path));
  EXPECT_EQ(status_of(path).st_ino, inode);

  // Moving a listener moves the file with it: removed once, by the last owner.
  const std::string moved_path = dir.file("moved.sock");
  std::optional<Listener> moved;
  {
    Listener first = Listener::bind_unix(moved_path);
    moved.emplace(std::move(first));
  }
  EXPECT_TRUE(test::exists(moved_path));
  moved.reset();
  EXPECT_FALSE(test::exists(moved_path));
}

TEST(UnixListener, ModeBitsAreExactlyThoseAskedForWhateverTheUmask) {
  const ScratchDir dir;
  const mode_t old_umask = ::umask(0);  // bind() alone would then leave 0777
  const Listener default_mode = Listener::bind_unix(dir.file("default.sock"));
  UnixOptions owner_only;
  owner_only.mode = 0600;
  const Listener private_mode = Listener::bind_unix(dir.file("private.sock"), owner_only);
  ::umask(old_umask);
  EXPECT_EQ(status_of(dir.file("default.sock")).st_mode & 07777, 0660U);
  EXPECT_EQ(status_of(dir.file("private.sock")).st_mode & 07777, 0600U);
}

TEST(UnixListener, TheGroupIsSet) {
  if (::geteuid() != 0) GTEST_SKIP() << "giving a file to another group needs root";
  const ScratchDir dir;
  UnixOptions options;
  options.group = find_group("4242");
  const Listener listener = Listener::bind_unix(dir.file("group.sock"), options);
  EXPECT_EQ(status_of(dir.file("group.sock")).st_gid, 4242U);
}

TEST(UnixListener, FindGroupTakesNamesAndNumbers) {
  EXPECT_EQ(find_group("0"), 0U);
  EXPECT_EQ(find_group("root"), 0U);
  try {
    (void)find_group("no-such-group-sockecho");
    ADD_FAILURE() << "an unknown group was found";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "unknown group 'no-such-group-sockecho'");
  }
}

TEST(UnixListener, AnAdoptedSocketIsNeitherChangedNorRemoved) {
  const ScratchDir dir;
  const std::string path = dir.file("systemd.sock");
  const Address address = Address::unix_path(path);
  Fd socket(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(::bind(socket.get(), address.data(), address.size()), 0);
  ASSERT_EQ(::chmod(path.c_str(), 0604), 0);
  ASSERT_EQ(::listen(socket.get(), SOMAXCONN), 0);
  const Fd giver(::dup(socket.get()));
  {
    ServerThread server(Listener(std::move(socket)), {}, echo());
    EXPECT_EQ(server.server().address().to_string(), "unix:" + path);
    EXPECT_EQ(ask(path, "adopted"), kPrefix + "adopted");
  }
  ASSERT_TRUE(test::exists(path)) << "the giver's file stays";
  EXPECT_EQ(status_of(path).st_mode & 07777, 0604U);
  // And it still listens: a client waits in its queue for the giver.
  Connection queued = dial(path);
  int accepting = 0;
  socklen_t len = sizeof accepting;
  ASSERT_EQ(::getsockopt(giver.get(), SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len), 0);
  EXPECT_EQ(accepting, 1);
}

TEST(UnixListener, AnAbstractNameHasNoFileAndCanBeInUse) {
  const std::string name = "@sockecho-test-" + std::to_string(::getpid());
  ServerThread server(Listener::bind_unix(name), {}, echo());
  EXPECT_EQ(server.server().address().to_string(), "unix:" + name);
  EXPECT_EQ(ask(name, "abstract"), kPrefix + "abstract");
  try {
    (void)Listener::bind_unix(name);
    ADD_FAILURE() << "an abstract name was bound twice";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::address_in_use);
  }
}

TEST(UnixListener, InterruptWakesEveryBlockedAccept) {
  const ScratchDir dir;
  Listener listener = Listener::bind_unix(dir.file("wake.sock"));
  std::vector<std::thread> acceptors;
  acceptors.reserve(3);
  std::atomic<int> woken{0};
  for (int i = 0; i < 3; ++i) {
    acceptors.emplace_back([&] {
      if (!listener.accept()) ++woken;
    });
  }
  listener.interrupt();
  for (std::thread& t : acceptors) t.join();
  EXPECT_EQ(woken.load(), 3);
  // Nothing listens now: connecting is refused.
  EXPECT_THROW((void)dial(dir.file("wake.sock")), std::system_error);
}

TEST(UnixListener, MaxPerSourceCountsPerUser) {
  const ScratchDir dir;
  open_to_all(dir);
  const std::string path = dir.file("per-user.sock");
  ServerOptions options;
  options.max_per_source = 1;
  UnixOptions everyone;
  everyone.mode = 0666;
  ServerThread server(Listener::bind_unix(path, everyone), options, echo());
  Connection held = dial(path);  // this user's one connection
  // Counted against its user once it waits in the room (active counts it from the accept, a
  // moment before its user is counted: a second connection then could be taken first).
  ASSERT_TRUE(test::eventually([&] { return server.server().waiting() == 1; }));
  ASSERT_EQ(server.server().stats().active, 1U);

  // Another connection of the same user, from the same process or not, is refused unanswered.
  Connection second = dial(path);
  std::string got;
  try {
    second.write_all("over the limit");
    second.close_write();
    got = second.read_to_end_string();
  } catch (const std::system_error& e) {
    EXPECT_TRUE(e.code() == std::errc::connection_reset || e.code() == std::errc::broken_pipe)
        << e.what();
  }
  EXPECT_EQ(got, "");
  ASSERT_TRUE(server.wait_finished(1));
  const ConnectionRecord refused = server.records().at(0);
  EXPECT_EQ(refused.outcome, Outcome::refused);
  EXPECT_EQ(refused.reason, "per_source");
  EXPECT_EQ(refused.peer.to_string().rfind("unix:uid=" + std::to_string(::getuid()) + ",", 0), 0U);

  if (::geteuid() != 0) GTEST_SKIP() << "a second user needs root";
  const NobodyResult nobody = connect_as_nobody(path, "another user");
  EXPECT_EQ(nobody.connect_errno, 0) << std::generic_category().message(nobody.connect_errno);
  EXPECT_EQ(nobody.reply, kPrefix + "another user") << "another uid has a share of its own";
}

// The administrator's acceptance test: with mode 0660 and a group nobody is not in, nobody cannot
// connect at all; with 0666 it can (so the refusal is the file's mode, not the directory's).
TEST(UnixListener, AUserOutsideTheModeCannotConnect) {
  if (::geteuid() != 0) GTEST_SKIP() << "switching to user nobody needs root";
  const ScratchDir dir;
  open_to_all(dir);
  UnixOptions guarded;
  guarded.mode = 0660;
  guarded.group = 4242;
  ServerThread closed(Listener::bind_unix(dir.file("guarded.sock"), guarded), {}, echo());
  const NobodyResult refused = connect_as_nobody(dir.file("guarded.sock"), "let me in");
  EXPECT_EQ(refused.connect_errno, EACCES)
      << std::generic_category().message(refused.connect_errno);
  EXPECT_EQ(refused.reply, "");

  UnixOptions open = guarded;
  open.mode = 0666;
  ServerThread opened(Listener::bind_unix(dir.file("open.sock"), open), {}, echo());
  const NobodyResult let_in = connect_as_nobody(dir.file("open.sock"), "let me in");
  EXPECT_EQ(let_in.connect_errno, 0) << std::generic_category().message(let_in.connect_errno);
  EXPECT_EQ(let_in.reply, kPrefix + "let me in");

  // In the socket's group, nobody may connect through 0660 too.
  guarded.group = kNogroup;
  ServerThread grouped(Listener::bind_unix(dir.file("grouped.sock"), guarded), {}, echo());
  EXPECT_EQ(connect_as_nobody(dir.file("grouped.sock"), "member").reply, kPrefix + "member");
}

}  // namespace
}  // namespace sockecho
