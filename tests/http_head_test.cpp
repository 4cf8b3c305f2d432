// The metrics listener's HTTP head parser, a private unit of src/ (http_head.cpp is compiled into
// this test, as nothing of it is exported).
#include "http_head.hpp"

#include <gtest/gtest.h>

#include <string_view>

namespace sockecho::detail {
namespace {

using State = HttpRequestHead::State;

TEST(HttpHead, ParsesARequestWithHeaders) {
  const HttpRequestHead h =
      parse_http_head("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: text/plain\r\n\r\n");
  EXPECT_EQ(h.state, State::complete);
  EXPECT_EQ(h.method, "GET");
  EXPECT_EQ(h.target, "/metrics");
  EXPECT_EQ(parse_http_head("GET /health HTTP/1.0\n\n").state, State::complete);
}

TEST(HttpHead, WaitsForTheBlankLine) {
  EXPECT_EQ(parse_http_head("").state, State::incomplete);
  EXPECT_EQ(parse_http_head("GE").state, State::incomplete);
  EXPECT_EQ(parse_http_head("GET /metrics HTTP/1.1\r\nHost: a\r\n").state, State::incomplete);
}

TEST(HttpHead, RejectsWhatIsNotAnHttpRequest) {
  for (const std::string_view bad :
       {"\x16\x03\x01", "GET\r\n\r\n", "GET /metrics\r\n\r\n", "GET metrics HTTP/1.1\r\n\r\n",
        "GET /metrics HTTP/2\r\n\r\n", "GET  /metrics HTTP/1.1\r\n\r\n",
        "GET /a b HTTP/1.1\r\n\r\n", "G(T /metrics HTTP/1.1\r\n\r\n",
        "GET /metrics HTTP/1.1\r\nno colon\r\n\r\n", "GET /metrics HTTP/1.1\r\n: v\r\n\r\n"}) {
    EXPECT_EQ(parse_http_head(bad).state, State::bad) << bad;
  }
}

}  // namespace
}  // namespace sockecho::detail
