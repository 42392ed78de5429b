#include "core/log.h"

#include <unistd.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>

#include "core/image.h"

namespace imgsvc::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
std::atomic<int> g_fd{STDOUT_FILENO};

const char* LevelName(Level level) {
  switch (level) {
    case Level::kDebug: return "debug";
    case Level::kInfo: return "info";
    case Level::kWarn: return "warn";
    case Level::kError: return "error";
  }
  return "info";
}

void WriteFully(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // nowhere left to report a logging failure
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

// Lines waiting to be written together (AccessLineGathering). While it is
// on, only its flusher thread writes, and outside the lock: an output that
// is slow or blocked (a full pipe to a log driver) holds up the flusher
// alone, and request threads only once kMaxWaitingBytes wait.
struct Gathering {
  static constexpr std::size_t kWriteAtBytes = 64 * 1024;
  static constexpr std::size_t kMaxWaitingBytes = 1024 * 1024;

  std::mutex mu;
  std::condition_variable work;     // the flusher waits for lines, then for the delay
  std::condition_variable written;  // callers wait for their line to be written, or for room
  std::atomic<bool> on{false};      // read without the lock on every line
  std::chrono::milliseconds delay{0};
  std::string lines;                // waiting
  std::string writing;              // being written (kept for its capacity)
  std::uint64_t appended_bytes = 0;
  std::uint64_t written_bytes = 0;
  bool write_now = false;           // a line that may not wait, or kWriteAtBytes waiting
  bool stopping = false;
  bool flusher_done = false;        // everything appended has been written
  std::thread flusher;

  // Sleeps while nothing waits (no wake-ups when idle); once lines arrive,
  // lets more gather for `delay` unless told to write now, then writes them.
  void Flusher() {
    std::unique_lock lock(mu);
    for (;;) {
      work.wait(lock, [this] { return stopping || !lines.empty(); });
      work.wait_for(lock, delay, [this] { return stopping || write_now; });
      write_now = false;
      if (lines.empty()) break;  // stopping, with nothing left
      lines.swap(writing);
      lock.unlock();
      WriteFully(g_fd.load(std::memory_order_relaxed), writing);
      lock.lock();
      written_bytes += writing.size();
      writing.clear();
      written.notify_all();
    }
    flusher_done = true;
    written.notify_all();
  }
};

Gathering& TheGathering() {
  static Gathering gathering;
  return gathering;
}

}  // namespace

AccessLineGathering::AccessLineGathering(std::chrono::milliseconds delay) {
  Gathering& gathering = TheGathering();
  std::lock_guard lock(gathering.mu);
  gathering.delay = delay;
  gathering.stopping = false;
  gathering.write_now = false;
  gathering.flusher_done = false;
  gathering.flusher = std::thread([&gathering] { gathering.Flusher(); });
  gathering.on.store(true, std::memory_order_release);
}

AccessLineGathering::~AccessLineGathering() {
  Gathering& gathering = TheGathering();
  {
    std::lock_guard lock(gathering.mu);
    gathering.on.store(false, std::memory_order_release);
    gathering.stopping = true;
  }
  gathering.work.notify_all();
  gathering.flusher.join();
}

bool ParseLevel(std::string_view text, Level& out) {
  if (text == "debug") out = Level::kDebug;
  else if (text == "info") out = Level::kInfo;
  else if (text == "warn") out = Level::kWarn;
  else if (text == "error") out = Level::kError;
  else return false;
  return true;
}

void SetLevel(Level level) { g_level.store(static_cast<int>(level), std::memory_order_relaxed); }
bool Enabled(Level level) { return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed); }
void SetFd(int fd) { g_fd.store(fd, std::memory_order_relaxed); }

// Bytes copied as they are: printable ASCII but the quote and the backslash.
constexpr std::array<bool, 256> kPlain = [] {
  std::array<bool, 256> plain{};
  for (int c = 0x20; c < 0x7f; ++c) plain[static_cast<std::size_t>(c)] = c != '"' && c != '\\';
  return plain;
}();

namespace {

// Where the run of plain bytes from `from` ends. JSON text of a listed page
// is nearly all plain (ids, timestamps, URLs), so the scan is what a listing
// pays per byte: sixteen bytes per step with SSE2 (every x86-64 has it),
// eight with word-wide bit tricks elsewhere (the classic "has a byte less
// than n / equal to c"; a false alarm only costs the byte loop).
std::size_t PlainRunEnd(std::string_view text, std::size_t from) {
  std::size_t i = from;
#if defined(__SSE2__)
  // Signed compares: bytes of 0x80 and above are negative, so "less than
  // 0x20" also stops at them, as it must (they need UTF-8 checking).
  const __m128i space = _mm_set1_epi8(0x20);
  const __m128i quote = _mm_set1_epi8('"');
  const __m128i backslash = _mm_set1_epi8('\\');
  const __m128i del = _mm_set1_epi8(0x7f);
  while (i + 16 <= text.size()) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(text.data() + i));
    const __m128i special = _mm_or_si128(
        _mm_or_si128(_mm_cmplt_epi8(bytes, space), _mm_cmpeq_epi8(bytes, quote)),
        _mm_or_si128(_mm_cmpeq_epi8(bytes, backslash), _mm_cmpeq_epi8(bytes, del)));
    if (const int mask = _mm_movemask_epi8(special); mask != 0) {
      return i + static_cast<std::size_t>(__builtin_ctz(mask));
    }
    i += 16;
  }
#else
  constexpr std::uint64_t kOnes = 0x0101010101010101ull;
  constexpr std::uint64_t kHigh = 0x8080808080808080ull;
  const auto has_zero_byte = [](std::uint64_t word) { return (word - kOnes) & ~word; };
  while (i + 8 <= text.size()) {
    std::uint64_t word;
    std::memcpy(&word, text.data() + i, 8);
    const std::uint64_t attention = ((word - kOnes * 0x20) & ~word) | has_zero_byte(word ^ (kOnes * '"')) |
                                    has_zero_byte(word ^ (kOnes * '\\')) | has_zero_byte(word ^ (kOnes * 0x7f)) |
                                    word;
    if ((attention & kHigh) != 0) break;
    i += 8;
  }
#endif
  while (i < text.size() && kPlain[static_cast<unsigned char>(text[i])]) ++i;
  return i;
}

}  // namespace

void AppendDecimal(std::string& out, std::uint64_t value) {
  char digits[20];
  const auto result = std::to_chars(digits, digits + sizeof(digits), value);
  out.append(digits, result.ptr);
}

void AppendJsonString(std::string& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.reserve(out.size() + text.size() + 2);
  out.push_back('"');
  for (std::size_t i = 0; i < text.size(); ++i) {
    // Runs of plain bytes (nearly all of a URL or an id) go in one append:
    // byte by byte, JSON-escaping was most of a listing's CPU.
    const std::size_t plain_end = PlainRunEnd(text, i);
    if (plain_end > i) {
      out.append(text.data() + i, plain_end - i);
      i = plain_end - 1;
      continue;
    }
    const char c = text[i];
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x80) {
      // JSON must be valid UTF-8 (strict parsers reject the whole line), and
      // client text (headers, paths) may not be: bad bytes become U+FFFD.
      if (const std::size_t length = core::Utf8SequenceLength(text.substr(i)); length != 0) {
        out.append(text.substr(i, length));
        i += length - 1;
      } else {
        out += "\\ufffd";
      }
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (u < 0x20 || u == 0x7f) {
          out += "\\u00";
          out.push_back(kHex[u >> 4]);
          out.push_back(kHex[u & 0xf]);
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
}

void Write(Level level, std::string_view message, std::initializer_list<Field> fields) {
  Write(level, message, std::span<const Field>(fields.begin(), fields.size()));
}

namespace {

void AppendMillis(std::string& out, Millis millis) {
  std::uint64_t micros = static_cast<std::uint64_t>(millis.micros);
  if (millis.micros < 0) {
    out.push_back('-');
    micros = 0 - micros;
  }
  AppendDecimal(out, micros / 1000);
  unsigned fraction = static_cast<unsigned>(micros % 1000);
  if (fraction == 0) return;
  char digits[4] = {'.', static_cast<char>('0' + fraction / 100), static_cast<char>('0' + fraction / 10 % 10),
                    static_cast<char>('0' + fraction % 10)};
  std::size_t length = sizeof digits;
  while (digits[length - 1] == '0') --length;
  out.append(digits, length);
}

// The line's JSON text, with its newline, in this thread's buffer (kept from
// line to line, so that a request line costs no allocation).
const std::string& FormatLine(Level level, std::string_view message, std::span<const Field> fields) {
  const auto now = std::chrono::duration_cast<std::chrono::microseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  thread_local std::string buffer;
  std::string& line = buffer;
  line.clear();
  line += "{\"time\":\"";
  core::AppendTimestamp(line, now);
  line += "\",\"level\":\"";
  line += LevelName(level);
  line += "\",\"msg\":";
  AppendJsonString(line, message);
  for (const auto& field : fields) {
    line += ",\"";
    line += field.key.text();
    line += "\":";
    std::visit(
        [&line](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, std::string_view>) {
            AppendJsonString(line, v);
          } else if constexpr (std::is_same_v<T, bool>) {
            line += v ? "true" : "false";
          } else if constexpr (std::is_same_v<T, Millis>) {
            AppendMillis(line, v);
          } else {
            char buf[32];
            auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
            line.append(buf, ec == std::errc() ? end : buf);
          }
        },
        field.value);
  }
  line += "}\n";
  return line;
}

// A line that may gather returns once it waits in line; any other returns
// once it is written, after every line that came before it.
void WriteLine(const std::string& line, bool may_gather) {
  Gathering& gathering = TheGathering();
  if (!gathering.on.load(std::memory_order_acquire)) {
    WriteFully(g_fd.load(std::memory_order_relaxed), line);
    return;
  }
  std::unique_lock lock(gathering.mu);
  if (may_gather) {
    gathering.written.wait(lock, [&gathering] {
      return gathering.lines.size() < Gathering::kMaxWaitingBytes || gathering.flusher_done;
    });
  }
  // Gathering may have ended since `on` was read: nobody else writes now.
  if (gathering.flusher_done) {
    WriteFully(g_fd.load(std::memory_order_relaxed), line);
    return;
  }
  const bool first = gathering.lines.empty();
  gathering.lines += line;
  gathering.appended_bytes += line.size();
  const bool write_now = !may_gather || gathering.lines.size() >= Gathering::kWriteAtBytes;
  if (write_now) gathering.write_now = true;
  if (first || write_now) gathering.work.notify_one();
  if (may_gather) return;
  const std::uint64_t through = gathering.appended_bytes;
  gathering.written.wait(lock, [&gathering, through] {
    return gathering.written_bytes >= through || gathering.flusher_done;
  });
}

}  // namespace

void Write(Level level, std::string_view message, std::span<const Field> fields) {
  if (!Enabled(level)) return;
  WriteLine(FormatLine(level, message, fields), /*may_gather=*/false);
}

void WriteAccess(Level level, std::string_view message, std::span<const Field> fields) {
  if (!Enabled(level)) return;
  WriteLine(FormatLine(level, message, fields), /*may_gather=*/level < Level::kWarn);
}

}  // namespace imgsvc::log
