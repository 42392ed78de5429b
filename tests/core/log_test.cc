#include "core/log.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <span>
#include <string>
#include <sstream>
#include <thread>
#include <vector>

#include "core/image.h"

namespace imgsvc::log {
namespace {

namespace json = boost::json;

// Sends log lines to a temporary file for the duration of a test.
class LogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char name[] = "/tmp/imgsvc-log-test-XXXXXX";
    fd_ = ::mkstemp(name);
    ASSERT_GE(fd_, 0);
    path_ = name;
    SetFd(fd_);
    SetLevel(Level::kDebug);
  }
  void TearDown() override {
    SetFd(STDOUT_FILENO);
    SetLevel(Level::kInfo);
    ::close(fd_);
    ::unlink(path_.c_str());
  }

  std::vector<std::string> Lines() const {
    std::ifstream in(path_);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }

  static json::object Parse(const std::string& line) {
    boost::system::error_code ec;
    json::value v = json::parse(line, ec);
    EXPECT_FALSE(ec) << ec.message() << " in: " << line;
    if (ec || !v.is_object()) return {};
    return v.as_object();
  }

  int fd_ = -1;
  std::string path_;
};

TEST_F(LogTest, OneJsonObjectPerLineWithTimeLevelMessageAndFields) {
  Info("request done", {{"status", 201}, {"path", "/api/v1/images"}, {"ms", 1.5}, {"cached", false},
                        {"bytes", std::uint64_t{1} << 40}, {"id", std::string("abc")}});
  const auto lines = Lines();
  ASSERT_EQ(lines.size(), 1u);
  const json::object o = Parse(lines[0]);
  EXPECT_EQ(o.at("level").as_string(), "info");
  EXPECT_EQ(o.at("msg").as_string(), "request done");
  EXPECT_EQ(o.at("status").as_int64(), 201);
  EXPECT_EQ(o.at("path").as_string(), "/api/v1/images");
  EXPECT_DOUBLE_EQ(o.at("ms").as_double(), 1.5);
  EXPECT_EQ(o.at("cached").as_bool(), false);
  EXPECT_EQ(o.at("bytes").as_int64(), std::int64_t{1} << 40);
  EXPECT_EQ(o.at("id").as_string(), "abc");
  const std::string time(o.at("time").as_string());
  EXPECT_EQ(time.size(), 27u);
  EXPECT_TRUE(core::ParseTimestamp(time).has_value()) << time;
}

TEST_F(LogTest, EscapesQuotesBackslashesAndControlCharacters) {
  const std::string nasty = std::string("say \"hi\" \\ path\nnext\r\ttab \x01\x1f\x7f end") + '\0' + "é😀";
  Warn(nasty, {{"field", nasty}});  // names need no escaping: FieldKey checks them when compiled
  const auto lines = Lines();
  ASSERT_EQ(lines.size(), 1u) << "a raw newline would split the line";
  const json::object o = Parse(lines[0]);
  EXPECT_EQ(o.at("msg").as_string(), nasty);
  EXPECT_EQ(o.at("field").as_string(), nasty);
  EXPECT_EQ(o.at("level").as_string(), "warn");
  for (const unsigned char c : lines[0]) EXPECT_GE(c, 0x20) << "raw control character in line";
}

TEST_F(LogTest, InvalidUtf8BecomesReplacementCharacters) {
  Error("bad bytes", {{"agent", "curl\xff\xc3(\xe2\x82"}});
  const auto lines = Lines();
  ASSERT_EQ(lines.size(), 1u);
  const json::object o = Parse(lines[0]);
  EXPECT_EQ(o.at("agent").as_string(), "curl\xEF\xBF\xBD\xEF\xBF\xBD(\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST_F(LogTest, AppendJsonStringWritesALiteral) {
  std::string out = "x=";
  AppendJsonString(out, "a\"b\\c\nd\x02");
  EXPECT_EQ(out, "x=\"a\\\"b\\\\c\\nd\\u0002\"");
}

// Plain bytes are copied in runs: every byte must still be escaped the same
// wherever it falls in a run (first, inside, last, alone).
TEST_F(LogTest, AppendJsonStringEscapesEveryByteWhereverItFallsInARun) {
  const auto escaped = [](unsigned char c) -> std::string {
    switch (c) {
      case '"': return "\\\"";
      case '\\': return "\\\\";
      case '\n': return "\\n";
      case '\r': return "\\r";
      case '\t': return "\\t";
      default: break;
    }
    if (c >= 0x80) return "\\ufffd";  // a lone byte of that range is never valid UTF-8
    if (c < 0x20 || c == 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\u%04x", c);
      return hex;
    }
    return std::string(1, static_cast<char>(c));
  };
  for (int c = 0; c < 256; ++c) {
    const std::string byte(1, static_cast<char>(c));
    for (const auto& [before, after] : std::vector<std::pair<std::string, std::string>>{
             {"", ""}, {"ab", ""}, {"", "cd"}, {"https://x/y?a=1", "&b=2"}}) {
      std::string out;
      AppendJsonString(out, before + byte + after);
      EXPECT_EQ(out, "\"" + before + escaped(static_cast<unsigned char>(c)) + after + "\"") << "byte " << c;
    }
  }
  // Plain runs are scanned sixteen bytes at a time (eight without SSE2):
  // every byte at every offset of a block, with whole plain blocks before
  // and after it.
  const std::string plain = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  for (int c = 0; c < 256; ++c) {
    for (std::size_t offset = 0; offset <= 33; ++offset) {
      const std::string before = plain.substr(0, offset);
      std::string out;
      AppendJsonString(out, before + static_cast<char>(c) + plain);
      EXPECT_EQ(out, "\"" + before + escaped(static_cast<unsigned char>(c)) + plain + "\"")
          << "byte " << c << " at offset " << offset;
    }
  }
  std::string out;
  AppendJsonString(out, "caf\xC3\xA9 \xE2\x82\xAC\"end");
  EXPECT_EQ(out, "\"caf\xC3\xA9 \xE2\x82\xAC\\\"end\"") << "valid UTF-8 inside runs is kept";
}

// The scan's last step looks at the text's last sixteen bytes, which may
// overlap bytes already handled, escaped ones included: any text length,
// with two bytes to escape at any two places.
TEST_F(LogTest, AppendJsonStringFindsEveryEscapeNearTheEndOfAnyLength) {
  for (std::size_t length = 1; length <= 48; ++length) {
    for (std::size_t first = 0; first <= length; ++first) {
      for (std::size_t second = first + 1; second <= length + 1; ++second) {
        // `first` or `second` == length (or beyond) means that escape is absent.
        std::string text(length, 'x');
        std::string expected = "\"";
        for (std::size_t i = 0; i < length; ++i) {
          if (i == first) {
            text[i] = '"';
            expected += "\\\"";
          } else if (i == second) {
            text[i] = '\x01';
            expected += "\\u0001";
          } else {
            expected += 'x';
          }
        }
        expected += '"';
        std::string out;
        AppendJsonString(out, text);
        ASSERT_EQ(out, expected) << "length " << length << ", escapes at " << first << " and " << second;
      }
    }
  }
}

TEST(AppendDecimalTest, AppendsEveryDigitOfAnyValue) {
  std::string out = "n=";
  AppendDecimal(out, 0);
  out += ',';
  AppendDecimal(out, 1234567890);
  out += ',';
  AppendDecimal(out, UINT64_MAX);
  EXPECT_EQ(out, "n=0,1234567890,18446744073709551615");
}

std::vector<std::string> Messages(const std::vector<std::string>& lines) {
  std::vector<std::string> messages;
  for (const std::string& line : lines) {
    boost::system::error_code ec;
    const json::value v = json::parse(line, ec);
    messages.push_back(!ec && v.is_object() ? std::string(v.as_object().at("msg").as_string()) : "?");
  }
  return messages;
}

// A duration in Millis reads as the double micros / 1000.0 did.
TEST_F(LogTest, MillisAreWrittenAsTheDoubleOfTheSameValue) {
  const std::vector<std::int64_t> samples{0, 1, 7, 10, 99, 100, 120, 999, 1000, 1001, 1010, 1200,
                                          12345, 999999, 1000000, 86'400'000'123, -1, -1500};
  for (const std::int64_t micros : samples) {
    const Field field{"duration_ms", Millis{micros}};
    Write(Level::kInfo, "timed", std::span(&field, 1));
  }
  const auto lines = Lines();
  ASSERT_EQ(lines.size(), samples.size());
  for (std::size_t i = 0; i < samples.size(); ++i) {
    char expected[32];
    const auto [end, ec] = std::to_chars(expected, expected + sizeof expected, static_cast<double>(samples[i]) / 1000.0);
    ASSERT_EQ(ec, std::errc());
    const std::string needle = "\"duration_ms\":" + std::string(expected, end) + "}";
    EXPECT_NE(lines[i].find(needle), std::string::npos) << lines[i] << " for " << samples[i];
    EXPECT_DOUBLE_EQ(Parse(lines[i]).at("duration_ms").to_number<double>(), static_cast<double>(samples[i]) / 1000.0);
  }
}

TEST_F(LogTest, RequestLinesAreWrittenAtOnceWhenNotGathered) {
  const Field status{"status", 200};
  WriteAccess(Level::kInfo, "request", std::span(&status, 1));
  EXPECT_EQ(Messages(Lines()), std::vector<std::string>{"request"});
}

// Gathered lines wait for the delay; then they come out together, in order,
// without any further line to push them.
TEST_F(LogTest, GatheredRequestLinesComeOutAfterTheDelay) {
  const AccessLineGathering gathering(std::chrono::milliseconds(300));
  const auto start = std::chrono::steady_clock::now();
  WriteAccess(Level::kInfo, "first", {});
  WriteAccess(Level::kInfo, "second", {});
  EXPECT_TRUE(Lines().empty());
  while (Lines().size() < 2 && std::chrono::steady_clock::now() - start < std::chrono::seconds(10)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(250));
  EXPECT_EQ(Messages(Lines()), (std::vector<std::string>{"first", "second"}));
}

// Any other line, and a request line of warn or above (a 5xx), goes out at
// once, after the request lines gathered before it.
TEST_F(LogTest, OtherLinesGoOutAtOnceAfterWhatWasGathered) {
  const AccessLineGathering gathering(std::chrono::seconds(60));
  WriteAccess(Level::kInfo, "gathered", {});
  Info("listening");
  EXPECT_EQ(Messages(Lines()), (std::vector<std::string>{"gathered", "listening"}));
  WriteAccess(Level::kInfo, "gathered again", {});
  WriteAccess(Level::kError, "failed request", {});
  EXPECT_EQ(Messages(Lines()),
            (std::vector<std::string>{"gathered", "listening", "gathered again", "failed request"}));
}

TEST_F(LogTest, GatheringEndsByWritingWhatIsLeft) {
  {
    const AccessLineGathering gathering(std::chrono::seconds(60));
    WriteAccess(Level::kInfo, "left", {});
    EXPECT_TRUE(Lines().empty());
  }
  EXPECT_EQ(Messages(Lines()), std::vector<std::string>{"left"});
  WriteAccess(Level::kInfo, "after", {});
  EXPECT_EQ(Messages(Lines()), (std::vector<std::string>{"left", "after"}));
}

// Lines written while gathering ends all come out, whichever side of the
// end they fall.
TEST_F(LogTest, NoRequestLineIsLostWhenGatheringEndsWhileThreadsWrite) {
  constexpr int kThreads = 4;
  constexpr int kLinesPerThread = 5000;
  std::vector<std::thread> writers;
  {
    const AccessLineGathering gathering(std::chrono::milliseconds(5));
    for (int t = 0; t < kThreads; ++t) {
      writers.emplace_back([] {
        for (int i = 0; i < kLinesPerThread; ++i) WriteAccess(Level::kInfo, "request", {});
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  for (std::thread& writer : writers) writer.join();
  EXPECT_EQ(Lines().size(), static_cast<std::size_t>(kThreads * kLinesPerThread));
}

// 64 KiB of waiting lines are written without waiting for the delay.
TEST_F(LogTest, GatheredLinesAreWrittenOnceTheyFill64KiB) {
  const AccessLineGathering gathering(std::chrono::seconds(60));
  const std::string padding(1000, 'x');
  const Field field{"padding", padding};
  for (int i = 0; i < 70; ++i) WriteAccess(Level::kInfo, "request", std::span(&field, 1));
  // About 61 lines make 64 KiB with their JSON; those after them may wait.
  const auto start = std::chrono::steady_clock::now();
  while (Lines().size() < 60 && std::chrono::steady_clock::now() - start < std::chrono::seconds(30)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_GE(Lines().size(), 60u);
}

// A pipe that nobody reads yet, its buffer already full: writes to it block.
class BlockedOutput {
 public:
  BlockedOutput() {
    int fds[2];
    EXPECT_EQ(::pipe(fds), 0);
    read_fd_ = fds[0];
    write_fd_ = fds[1];
    ::fcntl(write_fd_, F_SETPIPE_SZ, 4096);
    ::fcntl(write_fd_, F_SETFL, O_NONBLOCK);
    const std::string filler(4096, '#');
    while (::write(write_fd_, filler.data(), filler.size()) > 0) filler_bytes_ += filler.size();
    ::fcntl(write_fd_, F_SETFL, 0);
  }
  ~BlockedOutput() {
    if (write_fd_ >= 0) ::close(write_fd_);
    if (reader_.joinable()) reader_.join();
    ::close(read_fd_);
  }
  int fd() const { return write_fd_; }

  // Starts reading everything written, the filler aside.
  void Drain() {
    reader_ = std::thread([this] {
      char chunk[65536];
      for (ssize_t n; (n = ::read(read_fd_, chunk, sizeof chunk)) > 0;) read_.append(chunk, static_cast<std::size_t>(n));
    });
  }
  // Ends the writing side and returns the lines read.
  std::vector<std::string> Close() {
    ::close(write_fd_);
    write_fd_ = -1;
    reader_.join();
    std::vector<std::string> lines;
    std::istringstream in(read_.substr(filler_bytes_));
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }

 private:
  int read_fd_ = -1;
  int write_fd_ = -1;
  std::size_t filler_bytes_ = 0;
  std::thread reader_;
  std::string read_;
};

// An output that blocks (a log driver's full pipe) holds up the flusher, not
// the threads that log requests, until 1 MiB of their lines wait; then they
// wait for room, and once the output drains every line comes out, in order.
TEST_F(LogTest, ABlockedOutputHoldsUpRequestLinesOnlyOnceAMebibyteWaits) {
  BlockedOutput output;
  SetFd(output.fd());
  std::atomic<std::uint64_t> written{0};
  std::atomic<bool> stop{false};
  std::uint64_t stalled_at = 0;
  const std::string padding(1000, 'x');
  {
    const AccessLineGathering gathering(std::chrono::milliseconds(1));
    std::thread writer([&] {
      for (std::int64_t i = 0; !stop.load(); ++i) {
        const Field fields[] = {{"i", i}, {"padding", padding}};
        WriteAccess(Level::kInfo, "request", fields);
        written.fetch_add(1);
      }
    });
    // Until the writer stops making progress (or clearly never will).
    std::uint64_t seen = 0;
    for (int still = 0; still < 10 && written.load() < 100'000;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      const std::uint64_t now = written.load();
      still = now == seen ? still + 1 : 0;
      seen = now;
    }
    stalled_at = seen;
    stop.store(true);
    output.Drain();
    writer.join();
  }
  SetFd(fd_);
  const std::vector<std::string> lines = output.Close();
  ASSERT_EQ(lines.size(), written.load());
  std::size_t held_bytes = 0;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    ASSERT_EQ(Parse(lines[i]).at("i").as_int64(), static_cast<std::int64_t>(i));
    if (i < stalled_at) held_bytes += lines[i].size() + 1;
  }
  EXPECT_GE(held_bytes, 1024u * 1024u) << "request lines waited on the output early";
  EXPECT_LE(held_bytes, 2u * 1024u * 1024u + 64u * 1024u) << "request lines were held without bound";
}

TEST_F(LogTest, LevelFiltersLines) {
  SetLevel(Level::kWarn);
  EXPECT_FALSE(Enabled(Level::kInfo));
  EXPECT_TRUE(Enabled(Level::kError));
  Debug("no");
  Info("no");
  Warn("yes");
  Error("yes");
  const auto lines = Lines();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(Parse(lines[0]).at("level").as_string(), "warn");
  EXPECT_EQ(Parse(lines[1]).at("level").as_string(), "error");
}

TEST(LogLevelTest, ParsesNames) {
  Level level = Level::kInfo;
  EXPECT_TRUE(ParseLevel("debug", level));
  EXPECT_EQ(level, Level::kDebug);
  EXPECT_TRUE(ParseLevel("error", level));
  EXPECT_EQ(level, Level::kError);
  EXPECT_TRUE(ParseLevel("warn", level));
  EXPECT_EQ(level, Level::kWarn);
  EXPECT_TRUE(ParseLevel("info", level));
  EXPECT_EQ(level, Level::kInfo);
  EXPECT_FALSE(ParseLevel("INFO", level));
  EXPECT_FALSE(ParseLevel("verbose", level));
  EXPECT_EQ(level, Level::kInfo);
}

TEST_F(LogTest, ConcurrentLinesNeverInterleave) {
  constexpr int kThreads = 4;
  constexpr int kLinesEach = 300;
  const std::string payload(3000, 'p');
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kLinesEach; ++i) Info("line", {{"thread", t}, {"i", i}, {"payload", payload}});
    });
  }
  for (auto& thread : threads) thread.join();
  const auto lines = Lines();
  ASSERT_EQ(lines.size(), static_cast<std::size_t>(kThreads * kLinesEach));
  std::vector<int> next(kThreads, 0);
  for (const auto& line : lines) {
    const json::object o = Parse(line);
    ASSERT_EQ(o.at("payload").as_string(), payload);
    const auto t = static_cast<std::size_t>(o.at("thread").as_int64());
    EXPECT_EQ(o.at("i").as_int64(), next[t]++) << "lines of one thread stay in order";
  }
}

}  // namespace
}  // namespace imgsvc::log
