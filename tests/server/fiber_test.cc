#include "server/fiber.h"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include "core/blocking.h"
#include "net/http_client.h"
#include "support/early_answer_peer.h"

namespace imgsvc::server {
namespace {

using std::chrono::seconds;

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

TEST(FiberSlotsTest, StartsBeyondTheBoundWaitAndGetSlotsInOrder) {
  std::thread([] {  // the slots are the thread's own
    std::vector<int> started;
    EXPECT_TRUE(TakeFiberSlotOrQueue(2, [&] { started.push_back(1); }));
    EXPECT_TRUE(TakeFiberSlotOrQueue(2, [&] { started.push_back(2); }));
    EXPECT_FALSE(TakeFiberSlotOrQueue(2, [&] { started.push_back(3); }));
    EXPECT_FALSE(TakeFiberSlotOrQueue(2, [&] { started.push_back(4); }));
    EXPECT_TRUE(started.empty());
    ReturnFiberSlot();  // its slot goes to the first waiting
    EXPECT_EQ(started, (std::vector<int>{3}));
    ReturnFiberSlot();
    EXPECT_EQ(started, (std::vector<int>{3, 4}));
    ReturnFiberSlot();
    ReturnFiberSlot();
    EXPECT_TRUE(TakeFiberSlotOrQueue(2, [] {}));  // all four ended: two free
    EXPECT_TRUE(TakeFiberSlotOrQueue(2, [] {}));
    EXPECT_FALSE(TakeFiberSlotOrQueue(2, [] {}));
  }).join();
}

TEST(FiberSlotsTest, DroppingTheWaitingStartsReleasesThemAndTheSlots) {
  std::thread([] {
    auto held = std::make_shared<int>(0);
    EXPECT_TRUE(TakeFiberSlotOrQueue(1, [] {}));
    EXPECT_FALSE(TakeFiberSlotOrQueue(1, [held] {}));
    EXPECT_EQ(held.use_count(), 2);
    DropWaitingFibers();
    EXPECT_EQ(held.use_count(), 1);
    EXPECT_TRUE(TakeFiberSlotOrQueue(1, [] {}));
    DropWaitingFibers();
  }).join();
}

}  // namespace
}  // namespace imgsvc::server
