#include "server/fiber.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include "core/blocking.h"
#include "net/http_client.h"
#include "support/early_answer_peer.h"
#include "support/loopback_socket.h"

namespace imgsvc::server {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// An HTTP/1.1 peer on 127.0.0.1 for the fibers' socket waits: answers each
// request head "200 ok" on its connection (kept alive unless told), once
// `answer_at_heads` heads have come in all, after `delay`. A thread per
// connection; stops with the object.
class ScriptedPeer {
 public:
  struct Script {
    bool close_after_answer = false;
    int answer_at_heads = 1;
    milliseconds delay{0};
  };

  explicit ScriptedPeer(Script script) : script_(script), acceptor_([this] { Accept(); }) {}
  ~ScriptedPeer() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    heads_came_.notify_all();
    acceptor_.join();
    for (std::thread& connection : connections_) connection.join();
  }
  ScriptedPeer(const ScriptedPeer&) = delete;
  ScriptedPeer& operator=(const ScriptedPeer&) = delete;

  bool ok() const { return listener_.ok(); }
  net::Endpoint endpoint() const { return net::Endpoint{"http", "127.0.0.1", listener_.port()}; }
  int connections() const { return accepted_; }

 private:
  bool Stopping() {
    std::lock_guard lock(mu_);
    return stopping_;
  }
  bool WaitReadable(int fd) {
    while (!Stopping()) {
      pollfd waiter{fd, POLLIN, 0};
      if (::poll(&waiter, 1, 20) > 0) return true;
    }
    return false;
  }

  void Accept() {
    while (WaitReadable(listener_.fd())) {
      const int fd = ::accept4(listener_.fd(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      ++accepted_;
      connections_.emplace_back([this, fd] { Serve(fd); });
    }
  }

  void Serve(int fd) {
    std::string received;
    char chunk[4096];
    while (WaitReadable(fd)) {
      const ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
      if (n <= 0) break;
      received.append(chunk, static_cast<std::size_t>(n));
      for (std::size_t end; (end = received.find("\r\n\r\n")) != std::string::npos;) {
        received.erase(0, end + 4);
        if (!AnswerOne(fd)) {
          ::close(fd);
          return;
        }
      }
    }
    ::close(fd);
  }

  // False once the connection is to close.
  bool AnswerOne(int fd) {
    {
      std::unique_lock lock(mu_);
      ++heads_;
      heads_came_.notify_all();
      heads_came_.wait(lock, [this] { return stopping_ || heads_ >= script_.answer_at_heads; });
      if (stopping_) return false;
    }
    std::this_thread::sleep_for(script_.delay);
    const std::string answer = std::string("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n") +
                               (script_.close_after_answer ? "Connection: close\r\n" : "") + "\r\nok";
    if (::send(fd, answer.data(), answer.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(answer.size())) return false;
    return !script_.close_after_answer;
  }

  const Script script_;
  imgsvc::testing::LoopbackSocket listener_{/*listening=*/true};
  std::mutex mu_;
  std::condition_variable heads_came_;
  int heads_ = 0;
  bool stopping_ = false;
  std::atomic<int> accepted_{0};
  std::vector<std::thread> connections_;  // the acceptor's own until it is joined
  std::thread acceptor_;                  // last: starts once the rest is set
};

net::ClientRequest Get() {
  net::ClientRequest get;
  get.method = "GET";
  get.target = "/";
  return get;
}

// Runs `call` on a fiber of `io` (run on the calling thread until it ends).
StatusOr<net::ClientResponse> OnAFiber(boost::asio::io_context& io, WorkerPool& workers,
                                      const std::function<StatusOr<net::ClientResponse>()>& call) {
  StatusOr<net::ClientResponse> result = Status(Code::kInternal, "not run");
  boost::asio::post(io, [&] { StartFiber(io.get_executor(), workers, [&] { result = call(); }, [] {}); });
  io.restart();
  io.run();
  return result;
}

TEST(FiberTest, ABodyRunsOnTheIoThreadItsBlockingWorkOnAWorkerThenItsSequel) {
  boost::asio::io_context io;
  WorkerPool workers(2);
  std::thread::id body_thread;
  std::thread::id work_thread;
  std::thread::id then_thread;
  std::vector<std::string> order;
  boost::asio::post(io, [&] {
    StartFiber(
        io.get_executor(), workers,
        [&] {
          body_thread = std::this_thread::get_id();
          order.push_back("body");
          core::RunBlocking([&] { work_thread = std::this_thread::get_id(); });
          order.push_back("after the work");
        },
        [&] {
          then_thread = std::this_thread::get_id();
          order.push_back("then");
        });
    order.push_back("parked");  // StartFiber returns at the first park
  });
  io.run();
  EXPECT_EQ(body_thread, std::this_thread::get_id());
  EXPECT_NE(work_thread, std::this_thread::get_id());
  EXPECT_EQ(then_thread, std::this_thread::get_id());
  EXPECT_EQ(order, (std::vector<std::string>{"body", "parked", "after the work", "then"}));
}

// Each fiber's blocking work waits for the other's to start: were the work
// run on the io thread, the first would wait forever.
TEST(FiberTest, TwoFibersParkAtOnceOnOneThread) {
  boost::asio::io_context io;
  WorkerPool workers(2);
  std::promise<void> first_started;
  std::promise<void> second_started;
  std::shared_future<void> first = first_started.get_future().share();
  std::shared_future<void> second = second_started.get_future().share();
  int finished = 0;
  bool each_saw_the_other = true;
  const auto wait_for_the_other = [&](std::promise<void>& mine, const std::shared_future<void>& other) {
    core::RunBlocking([&] {
      mine.set_value();
      if (other.wait_for(seconds(10)) != std::future_status::ready) each_saw_the_other = false;
    });
  };
  boost::asio::post(io, [&] {
    StartFiber(io.get_executor(), workers, [&] { wait_for_the_other(first_started, second); }, [&] { ++finished; });
    StartFiber(io.get_executor(), workers, [&] { wait_for_the_other(second_started, first); }, [&] { ++finished; });
  });
  io.run();
  EXPECT_EQ(finished, 2);
  EXPECT_TRUE(each_saw_the_other);
}

TEST(FiberTest, WhatBlockingWorkThrowsIsThrownOnTheFiber) {
  boost::asio::io_context io;
  WorkerPool workers(1);
  std::string caught;
  boost::asio::post(io, [&] {
    StartFiber(
        io.get_executor(), workers,
        [&] {
          try {
            core::RunBlocking([] { throw std::runtime_error("from the worker"); });
          } catch (const std::runtime_error& e) {
            caught = e.what();
          }
        },
        [] {});
  });
  io.run();
  EXPECT_EQ(caught, "from the worker");
}

// The only worker is busy throughout: a sleep on a fiber needs none.
TEST(FiberTest, ASleepParksOnATimerWithoutAWorker) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::promise<void> busy;
  boost::asio::io_context io;
  WorkerPool workers(1);  // joined first, before what its task uses goes
  workers.Post([&busy, released] {
    busy.set_value();
    released.wait();
  });
  busy.get_future().wait();
  bool slept = false;
  boost::asio::post(io, [&] {
    StartFiber(io.get_executor(), workers, [] { core::SleepFor(std::chrono::milliseconds(5)); }, [&] { slept = true; });
  });
  io.run();
  release.set_value();
  EXPECT_TRUE(slept);
}

// A write wait on a fiber must see an answer that came before the peer
// read the whole request, not wait for the deadline.
TEST(FiberTest, AWriteWaitSeesAnAnswerThatCameFirst) {
  imgsvc::testing::EarlyAnswerPeer peer("HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n\r\ntoo big!");
  ASSERT_TRUE(peer.ok());
  boost::asio::io_context io;
  WorkerPool workers(1);
  net::HttpClientOptions options;
  options.total_timeout = std::chrono::seconds(10);
  net::HttpClient client(options);
  net::ClientRequest put;
  put.method = "PUT";
  put.target = "/large";
  put.body.assign(16 << 20, 'x');  // more than the socket buffers take
  StatusOr<net::ClientResponse> result = Status(Code::kInternal, "not sent");
  boost::asio::post(io, [&] {
    StartFiber(
        io.get_executor(), workers,
        [&] { result = client.Send(net::Endpoint{"http", "127.0.0.1", peer.port()}, put); }, [] {});
  });
  io.run();
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->status, 413);
  EXPECT_EQ(result->body, "too big!");
}

// `calls` GETs to `peer` in turn, by one client, each on a new fiber of one
// io thread.
std::vector<StatusOr<net::ClientResponse>> CallsInTurn(const ScriptedPeer& peer, int calls) {
  boost::asio::io_context io;
  WorkerPool workers(1);
  net::HttpClient client;
  std::vector<StatusOr<net::ClientResponse>> results;
  for (int call = 0; call < calls; ++call) {
    results.push_back(OnAFiber(io, workers, [&] { return client.Send(peer.endpoint(), Get()); }));
  }
  return results;
}

// A pooled connection's next wait re-arms the socket where it is watched.
TEST(FiberTest, CallsOnAPooledConnectionWaitEachTime) {
  ScriptedPeer peer({});
  ASSERT_TRUE(peer.ok());
  for (const StatusOr<net::ClientResponse>& result : CallsInTurn(peer, 3)) {
    ASSERT_TRUE(result.ok()) << result.status().ToString();
    EXPECT_EQ(result->body, "ok");
  }
  EXPECT_EQ(peer.connections(), 1);
}

// The kernel gives a closed socket's number to the next: it is watched anew.
TEST(FiberTest, ASocketNumberReusedAfterACloseIsWatchedAnew) {
  ScriptedPeer peer({.close_after_answer = true});
  ASSERT_TRUE(peer.ok());
  for (const StatusOr<net::ClientResponse>& result : CallsInTurn(peer, 3)) {
    ASSERT_TRUE(result.ok()) << result.status().ToString();
  }
  EXPECT_EQ(peer.connections(), 3);
}

// The peer answers only once both requests are in: both fibers wait at once.
TEST(FiberTest, TwoFibersWaitForTheirSocketsAtOnce) {
  ScriptedPeer peer({.answer_at_heads = 2});
  ASSERT_TRUE(peer.ok());
  boost::asio::io_context io;
  WorkerPool workers(1);
  net::HttpClientOptions options;
  options.total_timeout = seconds(10);
  net::HttpClient client(options);
  std::vector<StatusOr<net::ClientResponse>> results(2, Status(Code::kInternal, "not run"));
  boost::asio::post(io, [&] {
    for (auto& result : results) {
      StartFiber(io.get_executor(), workers, [&] { result = client.Send(peer.endpoint(), Get()); }, [] {});
    }
  });
  io.run();
  for (const auto& result : results) {
    ASSERT_TRUE(result.ok()) << result.status().ToString();
    EXPECT_EQ(result->body, "ok");
  }
  EXPECT_EQ(peer.connections(), 2);
}

// One pooled connection, taken by fibers of one io thread, then another's,
// then the first's again: each thread watches it in its own way.
TEST(FiberTest, AConnectionServesTheFibersOfTwoIoThreadsInTurn) {
  ScriptedPeer peer({});
  ASSERT_TRUE(peer.ok());
  net::HttpClient client;
  WorkerPool workers(1);
  boost::asio::io_context first;
  const auto call = [&] { return client.Send(peer.endpoint(), Get()); };
  ASSERT_TRUE(OnAFiber(first, workers, call).ok());
  StatusOr<net::ClientResponse> on_the_other = Status(Code::kInternal, "not run");
  std::thread([&] {
    boost::asio::io_context second;
    on_the_other = OnAFiber(second, workers, call);
  }).join();
  ASSERT_TRUE(on_the_other.ok()) << on_the_other.status().ToString();
  const StatusOr<net::ClientResponse> again = OnAFiber(first, workers, call);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(peer.connections(), 1);
}

// A call's deadline ends its wait; the io thread goes on serving fibers.
TEST(FiberTest, ADeadlineEndsAWaitAndTheThreadGoesOn) {
  ScriptedPeer slow({.delay = milliseconds(400)});
  ScriptedPeer prompt({});
  ASSERT_TRUE(slow.ok() && prompt.ok());
  boost::asio::io_context io;
  WorkerPool workers(1);
  net::HttpClientOptions options;
  options.total_timeout = milliseconds(100);
  net::HttpClient client(options);
  const StatusOr<net::ClientResponse> late = OnAFiber(io, workers, [&] { return client.Send(slow.endpoint(), Get()); });
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.status().code(), Code::kDeadlineExceeded);  // not the answer that comes later
  const StatusOr<net::ClientResponse> next = OnAFiber(io, workers, [&] { return client.Send(prompt.endpoint(), Get()); });
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  EXPECT_EQ(next->body, "ok");
}

// epoll takes no regular file, as it may take no socket when it has no
// room: such a wait is made in poll on the io thread, not failed at once
// (which the HTTP client's loop would retry without end).
TEST(FiberTest, AWaitEpollCannotTakeIsMadeInPoll) {
  char path[] = "/tmp/imgsvc-fiber-test-XXXXXX";
  const int file = ::mkstemp(path);
  ASSERT_GE(file, 0);
  ::unlink(path);
  boost::asio::io_context io;
  WorkerPool workers(1);
  short came = 0;
  bool timed_out = true;
  boost::asio::post(io, [&] {
    StartFiber(
        io.get_executor(), workers,
        [&] { came = ParkUntilReady(file, POLLIN, std::chrono::steady_clock::now() + seconds(5), timed_out); },
        [] {});
  });
  io.run();
  ::close(file);
  EXPECT_FALSE(timed_out);
  EXPECT_NE(came & POLLIN, 0);
}

TEST(FiberSlotsTest, StartsBeyondTheBoundWaitAndGetSlotsInOrder) {
  std::thread([] {  // the slots are the thread's own
    std::vector<int> started;
    EXPECT_TRUE(TakeFiberSlotOrQueue(FiberLane::kBodiless, 2, 1, [&] { started.push_back(1); }));
    EXPECT_TRUE(TakeFiberSlotOrQueue(FiberLane::kBodiless, 2, 1, [&] { started.push_back(2); }));
    EXPECT_FALSE(TakeFiberSlotOrQueue(FiberLane::kBodiless, 2, 1, [&] { started.push_back(3); }));
    EXPECT_FALSE(TakeFiberSlotOrQueue(FiberLane::kBodiless, 2, 1, [&] { started.push_back(4); }));
    EXPECT_TRUE(started.empty());
    ReturnFiberSlot(FiberLane::kBodiless, 2, 1);  // its slot goes to the first waiting
    EXPECT_EQ(started, (std::vector<int>{3}));
    ReturnFiberSlot(FiberLane::kBodiless, 2, 1);
    EXPECT_EQ(started, (std::vector<int>{3, 4}));
    ReturnFiberSlot(FiberLane::kBodiless, 2, 1);
    ReturnFiberSlot(FiberLane::kBodiless, 2, 1);
    EXPECT_TRUE(TakeFiberSlotOrQueue(FiberLane::kBodiless, 2, 1, [] {}));  // all four ended: two free
    EXPECT_TRUE(TakeFiberSlotOrQueue(FiberLane::kBodiless, 2, 1, [] {}));
    EXPECT_FALSE(TakeFiberSlotOrQueue(FiberLane::kBodiless, 2, 1, [] {}));
  }).join();
}

TEST(FiberSlotsTest, EachLaneHasItsOwnBoundAndQueue) {
  std::thread([] {
    std::vector<std::string> started;
    EXPECT_TRUE(TakeFiberSlotOrQueue(FiberLane::kWithBody, 1, 1, [] {}));
    EXPECT_FALSE(TakeFiberSlotOrQueue(FiberLane::kWithBody, 1, 1, [&] { started.push_back("body"); }));
    // The lane of requests with a body is full; the other one is not.
    EXPECT_TRUE(TakeFiberSlotOrQueue(FiberLane::kBodiless, 1, 1, [] {}));
    EXPECT_FALSE(TakeFiberSlotOrQueue(FiberLane::kBodiless, 1, 1, [&] { started.push_back("bodiless"); }));
    ReturnFiberSlot(FiberLane::kBodiless, 1, 1);
    EXPECT_EQ(started, (std::vector<std::string>{"bodiless"}));
    ReturnFiberSlot(FiberLane::kWithBody, 1, 1);
    EXPECT_EQ(started, (std::vector<std::string>{"bodiless", "body"}));
    DropWaitingFibers();
  }).join();
}

TEST(FiberSlotsTest, WeightsShareTheBoundFirstComeFirstServed) {
  std::thread([] {
    std::vector<std::string> started;
    EXPECT_TRUE(TakeFiberSlotOrQueue(FiberLane::kWithBody, 100, 30, [] {}));
    EXPECT_TRUE(TakeFiberSlotOrQueue(FiberLane::kWithBody, 100, 60, [] {}));
    EXPECT_FALSE(TakeFiberSlotOrQueue(FiberLane::kWithBody, 100, 50, [&] { started.push_back("50"); }));
    // It would fit (90 + 10), but waits behind the 50 that came first.
    EXPECT_FALSE(TakeFiberSlotOrQueue(FiberLane::kWithBody, 100, 10, [&] { started.push_back("10"); }));
    ReturnFiberSlot(FiberLane::kWithBody, 100, 30);  // 60 + 50 > 100: still waiting
    EXPECT_TRUE(started.empty());
    ReturnFiberSlot(FiberLane::kWithBody, 100, 60);  // both fit now: 50 + 10
    EXPECT_EQ(started, (std::vector<std::string>{"50", "10"}));
    ReturnFiberSlot(FiberLane::kWithBody, 100, 50);
    ReturnFiberSlot(FiberLane::kWithBody, 100, 10);
    // A weight over the bound runs when nothing else does, and alone.
    EXPECT_TRUE(TakeFiberSlotOrQueue(FiberLane::kWithBody, 100, 150, [] {}));
    EXPECT_FALSE(TakeFiberSlotOrQueue(FiberLane::kWithBody, 100, 1, [&] { started.push_back("1"); }));
    ReturnFiberSlot(FiberLane::kWithBody, 100, 150);
    EXPECT_EQ(started, (std::vector<std::string>{"50", "10", "1"}));
    DropWaitingFibers();
  }).join();
}

TEST(FiberSlotsTest, DroppingTheWaitingStartsReleasesThemAndTheSlots) {
  std::thread([] {
    auto held = std::make_shared<int>(0);
    for (const FiberLane lane : {FiberLane::kBodiless, FiberLane::kWithBody}) {
      EXPECT_TRUE(TakeFiberSlotOrQueue(lane, 1, 1, [] {}));
      EXPECT_FALSE(TakeFiberSlotOrQueue(lane, 1, 1, [held] {}));
    }
    EXPECT_EQ(held.use_count(), 3);
    DropWaitingFibers();
    EXPECT_EQ(held.use_count(), 1);
    EXPECT_TRUE(TakeFiberSlotOrQueue(FiberLane::kBodiless, 1, 1, [] {}));
    EXPECT_TRUE(TakeFiberSlotOrQueue(FiberLane::kWithBody, 1, 1, [] {}));
    DropWaitingFibers();
  }).join();
}

}  // namespace
}  // namespace imgsvc::server
