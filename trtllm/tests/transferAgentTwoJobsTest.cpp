/* TensorRT-LLM's transferAgentTest cases with the agents in two separately launched jobs
 * (run_twojobs.sh: two `mpiexec -n 1`, or two plain processes with no mpiexec at all), each
 * its own MPI world, joined only by links: connection info strings and descriptor blobs pass
 * through files in a shared folder, never through MPI. The test never calls MPI; the
 * adapter starts it (MPIXFER_TRTLLM_COMM unset: a context over MPI_COMM_SELF).
 *
 *   trtllm_agent_twojobs_test [gtest flags] 0 DIR   side 0: agent0 (and agent2)
 *   trtllm_agent_twojobs_test [gtest flags] 1 DIR   side 1: agent1
 *
 * Both sides run the same cases in the same order and meet at named points: a side writes
 * DIR/<side>.<case>.<point> (atomically, by rename) and the other waits for it, bounded.
 * A side whose case failed writes DIR/<side>.<case>.FAILED, so its peer stops waiting at
 * once; every case ends with both sides at the point "end". Bytes are checked after every
 * transfer on the side that owns them. */
#include "agentTestUtils.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>

using namespace mpixfer_trtllm_test;

namespace {

int gSide = -1;
std::string gDir;

std::string const kAgent0{"agent0"}, kAgent1{"agent1"}, kAgent2{"agent2"};

std::string caseName()
{
    auto const *info = ::testing::UnitTest::GetInstance()->current_test_info();
    return info != nullptr ? info->name() : "none";
}

std::string pointPath(int side, std::string const &point)
{
    return gDir + "/" + std::to_string(side) + "." + caseName() + "." + point;
}

bool fileExists(std::string const &path)
{
    struct stat st;
    return ::stat(path.c_str(), &st) == 0;
}

/* Publishes @p data (any bytes) at @p point of this case. */
void put(std::string const &point, std::string const &data = std::string())
{
    std::string const path = pointPath(gSide, point);
    std::string const tmp = path + ".tmp";
    {
        std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
        f.write(data.data(), static_cast<std::streamsize>(data.size()));
        if (!f.good())
            throw std::runtime_error("cannot write " + tmp);
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
        throw std::runtime_error("cannot rename " + tmp + ": " + std::strerror(errno));
}

/* The peer's data at @p point; false when it does not come within @p bound or the peer
 * failed this case (then @p why says which). */
bool get(std::string const &point, std::string &out, std::string &why,
         std::chrono::milliseconds bound = std::chrono::milliseconds(kPollBound),
         bool watchFailure = true)
{
    int const other = 1 - gSide;
    std::string const path = pointPath(other, point);
    std::string const failed = pointPath(other, "FAILED");
    auto const start = std::chrono::steady_clock::now();
    for (;;) {
        std::ifstream f(path, std::ios::binary);
        if (f.is_open()) {
            out.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
            return true;
        }
        if (watchFailure && fileExists(failed)) {
            why = "side " + std::to_string(other) + " failed this case before '" + point + "'";
            return false;
        }
        if (std::chrono::steady_clock::now() - start > bound) {
            why = "side " + std::to_string(other) + " did not reach '" + point + "' within " +
                  std::to_string(bound.count()) + " ms";
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
}

/* Both sides at @p point. */
#define MEET(point)                                                                                \
    do {                                                                                           \
        put(point);                                                                                \
        std::string _data, _why;                                                                   \
        ASSERT_TRUE(get(point, _data, _why)) << _why;                                              \
    } while (0)

/* The peer's data at @p point into @p out (a std::string). */
#define GET(point, out)                                                                            \
    do {                                                                                           \
        std::string _why;                                                                          \
        ASSERT_TRUE(get(point, out, _why)) << _why;                                                \
    } while (0)

/* What side 1 publishes about an agent: connection info and one buffer. */
struct Remote {
    std::string info;
    uintptr_t addr = 0;
    size_t len = 0;

    [[nodiscard]] MemoryDescs descs(MemoryType type = MemoryType::kDRAM) const
    {
        return MemoryDescs{type, {MemoryDesc{addr, len, 0}}};
    }
};

std::string encode(std::string const &info, void const *addr, size_t len)
{
    std::ostringstream s;
    s << info << '\n' << reinterpret_cast<uintptr_t>(addr) << '\n' << len << '\n';
    return s.str();
}

Remote decode(std::string const &text)
{
    Remote r;
    std::istringstream s(text);
    std::getline(s, r.info);
    s >> r.addr >> r.len;
    return r;
}

/* Side 1's memory and side 0's tell-tale fills. */
constexpr char kFill0 = 10;
constexpr char kFill1 = 1;

class TwoJobsTest : public ::testing::Test {
  protected:
    void TearDown() override
    {
        if (HasFailure())
            put("FAILED");
        /* Every case ends together, failed or not (the peer stops waiting on FAILED). */
        put("end");
        std::string data, why;
        EXPECT_TRUE(get("end", data, why, std::chrono::milliseconds(kPollBound), false)) << why;
    }
};

/* Side 0 loads agent1 from the published info: usable on return, no polling. */
void loadUsable(BaseTransferAgent &agent, Remote const &r)
{
    auto const start = std::chrono::steady_clock::now();
    agent.loadRemoteAgent(kAgent1, r.info);
    auto const ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
    EXPECT_TRUE(agent.checkRemoteDescs(kAgent1, r.descs()))
        << "loadRemoteAgent returned after " << ms << " ms, before the remote was usable";
}

TEST_F(TwoJobsTest, Basic)
{
    if (gSide == 1) {
        auto agent = makeAgent(kAgent1);
        std::vector<char> memory1(100, kFill1);
        RegisterDescs reg{MemoryType::kDRAM, {MemoryDesc{memory1}}};
        agent->registerMemory(reg);
        EXPECT_EQ(agent->getLocalConnectionInfo().rfind("mpixfer:3:", 0), 0u);
        put("info", encode(agent->getLocalConnectionInfo(), memory1.data(), memory1.size()));
        std::string done;
        GET("written", done);
        EXPECT_EQ(memory1, std::vector<char>(100, kFill0));
        MEET("checked");
        agent->deregisterMemory(reg);
    } else {
        auto agent = makeAgent(kAgent0);
        std::vector<char> memory0(100, kFill0);
        RegisterDescs reg{MemoryType::kDRAM, {MemoryDesc{memory0}}};
        agent->registerMemory(reg);
        std::string text;
        GET("info", text);
        Remote r = decode(text);
        loadUsable(*agent, r);
        TransferRequest writeReq{TransferOp::kWRITE, reg, r.descs(), kAgent1};
        auto status = agent->submitTransferRequests(writeReq);
        EXPECT_EQ(status->wait(), TransferState::kSUCCESS);
        EXPECT_TRUE(status->isCompleted());
        EXPECT_EQ(memory0, std::vector<char>(100, kFill0));
        put("written");
        MEET("checked");
        agent->deregisterMemory(reg);
    }
}

TEST_F(TwoJobsTest, Basic2)
{
    if (gSide == 1) {
        auto agent = makeAgent(kAgent1);
        std::vector<char> memory1(100, kFill1);
        RegisterDescs reg{MemoryType::kDRAM, {MemoryDesc{memory1}}};
        agent->registerMemory(reg);
        put("info", encode(agent->getLocalConnectionInfo(), memory1.data(), memory1.size()));
        std::string done;
        GET("read", done);
        EXPECT_EQ(memory1, std::vector<char>(100, kFill1)) << "a READ changes nothing remote";
        MEET("checked");
        agent->deregisterMemory(reg);
    } else {
        auto agent = makeAgent(kAgent0);
        std::vector<char> memory0(100, kFill0);
        RegisterDescs reg{MemoryType::kDRAM, {MemoryDesc{memory0}}};
        agent->registerMemory(reg);
        std::string text;
        GET("info", text);
        Remote r = decode(text);
        loadUsable(*agent, r);
        TransferRequest readReq{TransferOp::kREAD, reg, r.descs(), kAgent1};
        auto status = agent->submitTransferRequests(readReq);
        EXPECT_EQ(status->wait(), TransferState::kSUCCESS);
        EXPECT_EQ(memory0, std::vector<char>(100, kFill1));
        put("read");
        MEET("checked");
        agent->deregisterMemory(reg);
    }
}

/* Three agents: agent0 and agent2 (side 0, one buffer registered in both) both use agent1's
 * one connection info. */
TEST_F(TwoJobsTest, Connect)
{
    if (gSide == 1) {
        auto agent = makeAgent(kAgent1);
        std::vector<char> memory1(100, kFill1);
        MemoryDescs mem{MemoryType::kDRAM, {MemoryDesc{memory1}}};
        agent->registerMemory(mem);
        put("info", encode(agent->getLocalConnectionInfo(), memory1.data(), memory1.size()));
        for (int round = 0; round < 2; round++) {
            std::string done;
            GET("written" + std::to_string(round), done);
            EXPECT_EQ(memory1, std::vector<char>(100, static_cast<char>(kFill0 + round)))
                << "round " << round;
            std::fill(memory1.begin(), memory1.end(), kFill1);
            put("checked" + std::to_string(round));
        }
        MEET("done");
        agent->deregisterMemory(mem);
    } else {
        auto a = makeAgent(kAgent0);
        auto b = makeAgent(kAgent2);
        std::vector<char> memory0(100, kFill0);
        MemoryDescs mem{MemoryType::kDRAM, {MemoryDesc{memory0}}};
        a->registerMemory(mem);
        b->registerMemory(mem);
        std::string text;
        GET("info", text);
        Remote r = decode(text);
        for (int round = 0; round < 2; round++) {
            std::fill(memory0.begin(), memory0.end(), static_cast<char>(kFill0 + round));
            BaseTransferAgent &sender = round == 0 ? *a : *b;
            loadUsable(sender, r);
            TransferRequest writeReq{TransferOp::kWRITE, mem, r.descs(), kAgent1};
            EXPECT_EQ(sender.submitTransferRequests(writeReq)->wait(), TransferState::kSUCCESS);
            put("written" + std::to_string(round));
            std::string done;
            GET("checked" + std::to_string(round), done);
        }
        MEET("done");
        b->deregisterMemory(mem);
        a->deregisterMemory(mem);
    }
}

TEST_F(TwoJobsTest, SyncMessage)
{
    std::string const syncMessage{"agent_sync_message"};
    std::string const syncMessage2{"two_agent_sync_message"};
    std::string const syncMessage3{"three_agent_sync_message"};
    std::string const syncMessage4{"four_agent_sync_message"};
    std::string const binary("\0bin\0ary\xff\x01\0", 12);

    if (gSide == 1) {
        auto agent = makeAgent(kAgent1);
        std::vector<char> memory1(100, kFill1);
        RegisterDescs reg{MemoryType::kDRAM, {MemoryDesc{memory1}}};
        agent->registerMemory(reg);
        put("info", encode(agent->getLocalConnectionInfo(), memory1.data(), memory1.size()));

        /* A WRITE, then a separate notification: exactly {"agent0": [message]}. */
        auto notif = waitNotified(*agent);
        ASSERT_EQ(notif.size(), 1u);
        ASSERT_EQ(notif[kAgent0].size(), 1u);
        EXPECT_EQ(notif[kAgent0][0], syncMessage);
        std::string done;
        GET("written", done);
        EXPECT_EQ(memory1, std::vector<char>(100, kFill0));
        put("drained");

        /* A second message alone. */
        auto notif2 = waitNotified(*agent);
        ASSERT_EQ(notif2.size(), 1u);
        ASSERT_EQ(notif2[kAgent0].size(), 1u);
        EXPECT_EQ(notif2[kAgent0][0], syncMessage2);
        EXPECT_TRUE(agent->getNotifiedSyncMessages().empty());

        /* The reverse: load agent0 by connection info, notify straight after. */
        std::string text;
        GET("info0", text);
        Remote r0 = decode(text);
        agent->loadRemoteAgent(kAgent0, r0.info);
        agent->notifySyncMessage(kAgent0, syncMessage3);

        /* A WRITE back into a buffer agent0 and agent2 both registered after that load:
         * load agent0 again, then the bytes are there when the sync message is seen. */
        GET("info0b", text);
        Remote r0b = decode(text);
        agent->loadRemoteAgent(kAgent0, r0b.info);
        EXPECT_TRUE(agent->checkRemoteDescs(kAgent0, r0b.descs()));
        std::fill(memory1.begin(), memory1.end(), 5);
        TransferRequest writeReq{TransferOp::kWRITE, reg, r0b.descs(), kAgent0, syncMessage4};
        auto status = agent->submitTransferRequests(writeReq);
        EXPECT_EQ(status->wait(), TransferState::kSUCCESS);
        EXPECT_EQ(memory1, std::vector<char>(100, 5));

        /* A binary message (NUL and high bytes), then an empty one, in order. */
        std::vector<SyncMessage> got;
        auto const start = std::chrono::steady_clock::now();
        while (got.size() < 2 && std::chrono::steady_clock::now() - start < kPollBound) {
            auto more = agent->getNotifiedSyncMessages();
            EXPECT_LE(more.size(), 1u);
            for (auto &m : more[kAgent0])
                got.push_back(m);
            std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
        ASSERT_EQ(got.size(), 2u);
        EXPECT_EQ(got[0], binary);
        EXPECT_EQ(got[1], std::string());
        MEET("done");
        agent->deregisterMemory(reg);
    } else {
        auto agent = makeAgent(kAgent0);
        std::vector<char> memory0(100, kFill0);
        RegisterDescs reg{MemoryType::kDRAM, {MemoryDesc{memory0}}};
        agent->registerMemory(reg);
        std::string text;
        GET("info", text);
        Remote r = decode(text);
        loadUsable(*agent, r);

        TransferRequest writeReq{TransferOp::kWRITE, reg, r.descs(), kAgent1};
        auto status = agent->submitTransferRequests(writeReq);
        agent->notifySyncMessage(kAgent1, syncMessage);
        EXPECT_TRUE(waitCompleted(*status));
        EXPECT_EQ(status->wait(), TransferState::kSUCCESS);
        put("written");
        std::string done;
        GET("drained", done);
        agent->notifySyncMessage(kAgent1, syncMessage2);

        /* agent1 loads us and notifies at once. */
        put("info0", encode(agent->getLocalConnectionInfo(), memory0.data(), memory0.size()));
        auto notif3 = waitNotified(*agent);
        ASSERT_EQ(notif3.size(), 1u);
        ASSERT_EQ(notif3[kAgent1].size(), 1u);
        EXPECT_EQ(notif3[kAgent1][0], syncMessage3);

        /* A buffer registered in agent0 and agent2, published after agent1 loaded agent0. */
        auto agent2 = makeAgent(kAgent2);
        std::vector<char> memory2(100, 0);
        RegisterDescs reg2{MemoryType::kDRAM, {MemoryDesc{memory2}}};
        agent->registerMemory(reg2);
        agent2->registerMemory(reg2);
        put("info0b", encode(agent->getLocalConnectionInfo(), memory2.data(), memory2.size()));
        auto notif4 = waitNotified(*agent);
        /* The sync message follows the data: the bytes are in place now. */
        EXPECT_EQ(memory2, std::vector<char>(100, 5));
        ASSERT_EQ(notif4.size(), 1u);
        ASSERT_EQ(notif4[kAgent1].size(), 1u);
        EXPECT_EQ(notif4[kAgent1][0], syncMessage4);
        EXPECT_EQ(memory0, std::vector<char>(100, kFill0)) << "only memory2 was written";

        agent->notifySyncMessage(kAgent1, binary);
        agent->notifySyncMessage(kAgent1, std::string());
        MEET("done");
        agent2->deregisterMemory(reg2);
        agent->deregisterMemory(reg2);
        agent->deregisterMemory(reg);
    }
}

/* Loading by AgentDesc: the binary blob travels through a file. */
TEST_F(TwoJobsTest, AgentDesc)
{
    if (gSide == 1) {
        auto agent = makeAgent(kAgent1);
        std::vector<char> memory1(100, kFill1);
        RegisterDescs reg{MemoryType::kDRAM, {MemoryDesc{memory1}}};
        agent->registerMemory(reg);
        put("info", encode("", memory1.data(), memory1.size()));
        put("blob", agent->getLocalAgentDesc().getBackendAgentDesc());
        std::string done;
        GET("written", done);
        EXPECT_EQ(memory1, std::vector<char>(100, kFill0));
        std::fill(memory1.begin(), memory1.end(), 3);
        put("refilled");
        MEET("done");
        agent->deregisterMemory(reg);
    } else {
        auto agent = makeAgent(kAgent0);
        std::vector<char> memory0(100, kFill0);
        RegisterDescs reg{MemoryType::kDRAM, {MemoryDesc{memory0}}};
        agent->registerMemory(reg);
        std::string text, blob;
        GET("info", text);
        GET("blob", blob);
        Remote r = decode(text);
        AgentDesc desc{blob};
        std::string err = thrownText([&] { agent->loadRemoteAgent(kAgent2, desc); });
        EXPECT_NE(err.find("MPIXFER_ERR_INVALID_ARG"), std::string::npos) << err;
        agent->loadRemoteAgent(kAgent1, desc);
        EXPECT_TRUE(agent->checkRemoteDescs(kAgent1, r.descs()))
            << "loadRemoteAgent(AgentDesc) returned before the remote was usable";
        TransferRequest writeReq{TransferOp::kWRITE, reg, r.descs(), kAgent1};
        EXPECT_EQ(agent->submitTransferRequests(writeReq)->wait(), TransferState::kSUCCESS);
        put("written");
        std::string done;
        GET("refilled", done);
        TransferRequest readReq{TransferOp::kREAD, reg, r.descs(), kAgent1};
        EXPECT_EQ(agent->submitTransferRequests(readReq)->wait(), TransferState::kSUCCESS);
        EXPECT_EQ(memory0, std::vector<char>(100, 3));
        MEET("done");
        agent->deregisterMemory(reg);
    }
}

TEST_F(TwoJobsTest, DeviceMemory)
{
    TRTLLM_SKIP_WITHOUT_GPU();
#if defined(TRTLLM_TEST_HAVE_CUDA)
    size_t const size = 100;
    char *dev = nullptr;
    ASSERT_EQ(cudaMalloc(reinterpret_cast<void **>(&dev), size), cudaSuccess);
    std::vector<char> host(size, gSide == 0 ? kFill0 : kFill1);
    ASSERT_EQ(cudaMemcpy(dev, host.data(), size, cudaMemcpyHostToDevice), cudaSuccess);
    RegisterDescs reg{MemoryType::kVRAM, {MemoryDesc{dev, size, 0}}};
    if (gSide == 1) {
        auto agent = makeAgent(kAgent1);
        agent->registerMemory(reg);
        put("info", encode(agent->getLocalConnectionInfo(), dev, size));
        std::string done;
        GET("written", done);
        std::vector<char> back(size, 0);
        ASSERT_EQ(cudaMemcpy(back.data(), dev, size, cudaMemcpyDeviceToHost), cudaSuccess);
        EXPECT_EQ(back, std::vector<char>(size, kFill0));
        ASSERT_EQ(cudaMemset(dev, 4, size), cudaSuccess);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        put("refilled");
        MEET("done");
        agent->deregisterMemory(reg);
    } else {
        auto agent = makeAgent(kAgent0);
        agent->registerMemory(reg);
        std::string text;
        GET("info", text);
        Remote r = decode(text);
        agent->loadRemoteAgent(kAgent1, r.info);
        EXPECT_TRUE(agent->checkRemoteDescs(kAgent1, r.descs(MemoryType::kVRAM)));
        TransferRequest writeReq{TransferOp::kWRITE, reg, r.descs(MemoryType::kVRAM), kAgent1};
        EXPECT_EQ(agent->submitTransferRequests(writeReq)->wait(), TransferState::kSUCCESS);
        put("written");
        std::string done;
        GET("refilled", done);
        TransferRequest readReq{TransferOp::kREAD, reg, r.descs(MemoryType::kVRAM), kAgent1};
        EXPECT_EQ(agent->submitTransferRequests(readReq)->wait(), TransferState::kSUCCESS);
        std::vector<char> back(size, 0);
        ASSERT_EQ(cudaMemcpy(back.data(), dev, size, cudaMemcpyDeviceToHost), cudaSuccess);
        EXPECT_EQ(back, std::vector<char>(size, 4));
        MEET("done");
        agent->deregisterMemory(reg);
    }
    cudaFree(dev);
#endif
}

/* Loopback across jobs: side 0 offloads to files in the shared folder (multi-threaded
 * agent), side 1 loads them (single-threaded) and checks, then offloads its own bytes for
 * side 0 to load and check. */
TEST_F(TwoJobsTest, Loopback)
{
    constexpr int kFiles = 2;
    constexpr size_t kLen = 1 << 20;
    auto pattern = [](int side, int i, size_t j) {
        return static_cast<char>((j * 13 + static_cast<size_t>(i) * 101 + side * 7) & 0xff);
    };
    auto fileName = [](int side, int i) {
        return gDir + "/loopback" + std::to_string(side) + "." + std::to_string(i);
    };
    auto openFiles = [&](int side, int flags) {
        std::vector<FileDesc> v;
        for (int i = 0; i < kFiles; i++)
            v.emplace_back(fileName(side, i), flags, 0664, kLen);
        return FileDescs{std::move(v)};
    };
    BaseAgentConfig config{"loopback", true, gSide == 0, true, 4};
    auto agent = makeLoopbackAgent(&config);
    std::vector<std::vector<char>> mem(kFiles, std::vector<char>(kLen));
    std::vector<MemoryDesc> descs;
    for (int i = 0; i < kFiles; i++)
        descs.emplace_back(mem[i]);
    MemoryDescs memDescs{MemoryType::kDRAM, descs};

    auto offload = [&] {
        for (int i = 0; i < kFiles; i++)
            for (size_t j = 0; j < kLen; j++)
                mem[i][j] = pattern(gSide, i, j);
        FileDescs files = openFiles(gSide, O_CREAT | O_RDWR | O_TRUNC);
        agent->executeLoopbackRequest(memDescs, files, true);
    };
    auto loadAndCheck = [&] {
        for (auto &m : mem)
            std::fill(m.begin(), m.end(), 0);
        FileDescs files = openFiles(1 - gSide, O_RDONLY);
        agent->executeLoopbackRequest(memDescs, files, false);
        for (int i = 0; i < kFiles; i++) {
            bool same = true;
            for (size_t j = 0; j < kLen && same; j++)
                same = mem[i][j] == pattern(1 - gSide, i, j);
            EXPECT_TRUE(same) << "file " << i << " of side " << 1 - gSide;
        }
    };
    std::string done;
    if (gSide == 0) {
        offload();
        put("offloaded");
        GET("offloaded", done);
        loadAndCheck();
    } else {
        GET("offloaded", done);
        loadAndCheck();
        offload();
        put("offloaded");
    }
    MEET("done");
    for (int i = 0; i < kFiles; i++)
        std::remove(fileName(gSide, i).c_str());
}

/* wait(0) on a 40 MB WRITE is one poll; then SUCCESS with every byte there. */
TEST_F(TwoJobsTest, WaitZeroLarge)
{
    size_t const size = 40u << 20;
    auto byteAt = [](size_t i) { return static_cast<char>(i * 31 + 7); };
    if (gSide == 1) {
        auto agent = makeAgent(kAgent1);
        std::vector<char> memory1(size, 0);
        RegisterDescs reg{MemoryType::kDRAM, {MemoryDesc{memory1}}};
        agent->registerMemory(reg);
        put("info", encode(agent->getLocalConnectionInfo(), memory1.data(), memory1.size()));
        std::string done;
        GET("written", done);
        size_t bad = size;
        for (size_t i = 0; i < size && bad == size; i++)
            if (memory1[i] != byteAt(i))
                bad = i;
        EXPECT_EQ(bad, size) << "first wrong byte at " << bad;
        MEET("checked");
        agent->deregisterMemory(reg);
    } else {
        auto agent = makeAgent(kAgent0);
        std::vector<char> memory0(size);
        for (size_t i = 0; i < size; i++)
            memory0[i] = byteAt(i);
        RegisterDescs reg{MemoryType::kDRAM, {MemoryDesc{memory0}}};
        agent->registerMemory(reg);
        std::string text;
        GET("info", text);
        Remote r = decode(text);
        loadUsable(*agent, r);
        TransferRequest writeReq{TransferOp::kWRITE, reg, r.descs(), kAgent1};
        auto status = agent->submitTransferRequests(writeReq);
        TransferState first = status->wait(0);
        EXPECT_TRUE(first == TransferState::kIN_PROGRESS || first == TransferState::kSUCCESS);
        EXPECT_EQ(status->wait(), TransferState::kSUCCESS);
        EXPECT_TRUE(status->isCompleted());
        EXPECT_EQ(status->wait(1000), TransferState::kSUCCESS);
        put("written");
        MEET("checked");
        agent->deregisterMemory(reg);
    }
}

/* After invalidateRemoteAgent a WRITE throws at submit or ends in FAILURE, and nothing
 * moves; loading again makes the remote usable again. */
TEST_F(TwoJobsTest, InvalidateThenSubmit)
{
    if (gSide == 1) {
        auto agent = makeAgent(kAgent1);
        std::vector<char> memory1(100, kFill1);
        RegisterDescs reg{MemoryType::kDRAM, {MemoryDesc{memory1}}};
        agent->registerMemory(reg);
        put("info", encode(agent->getLocalConnectionInfo(), memory1.data(), memory1.size()));
        std::string done;
        GET("written", done);
        EXPECT_EQ(memory1, std::vector<char>(100, kFill0));
        std::fill(memory1.begin(), memory1.end(), kFill1);
        put("refilled");
        GET("invalidated", done);
        EXPECT_EQ(memory1, std::vector<char>(100, kFill1)) << "nothing may move after invalidation";
        put("checked");
        GET("reloaded", done);
        EXPECT_EQ(memory1, std::vector<char>(100, 11));
        MEET("done");
        agent->deregisterMemory(reg);
    } else {
        auto agent = makeAgent(kAgent0);
        std::vector<char> memory0(100, kFill0);
        RegisterDescs reg{MemoryType::kDRAM, {MemoryDesc{memory0}}};
        agent->registerMemory(reg);
        std::string text, done;
        GET("info", text);
        Remote r = decode(text);
        loadUsable(*agent, r);
        TransferRequest writeReq{TransferOp::kWRITE, reg, r.descs(), kAgent1};
        EXPECT_EQ(agent->submitTransferRequests(writeReq)->wait(), TransferState::kSUCCESS);
        put("written");
        GET("refilled", done);

        agent->invalidateRemoteAgent(kAgent1);
        EXPECT_FALSE(agent->checkRemoteDescs(kAgent1, r.descs()));
        std::unique_ptr<TransferStatus> status;
        std::string err = thrownText([&] { status = agent->submitTransferRequests(writeReq); });
        if (err.empty()) {
            ASSERT_NE(status, nullptr);
            EXPECT_EQ(status->wait(), TransferState::kFAILURE);
        } else {
            EXPECT_NE(err.find("MPIXFER_ERR_NOT_FOUND"), std::string::npos) << err;
        }
        agent->invalidateRemoteAgent(kAgent1); /* again: harmless */
        put("invalidated");
        GET("checked", done);

        loadUsable(*agent, r);
        std::fill(memory0.begin(), memory0.end(), 11);
        EXPECT_EQ(agent->submitTransferRequests(writeReq)->wait(), TransferState::kSUCCESS);
        put("reloaded");
        MEET("done");
        agent->deregisterMemory(reg);
    }
}

/* loadRemoteAgent(connectionInfo) of a remote that never answers: side 1's agent listens,
 * then its whole process stops (SIGSTOP: the kernel still accepts the TCP connection, nobody
 * answers the handshake). The adapter gives up after its stall timeout with
 * MPIXFER_ERR_TIMEOUT, forgets the half-loaded remote, and side 0 wakes side 1 (SIGCONT). */
/* A connection info whose key was altered: the serving side refuses the link, and the
 * load throws that reason (MPIXFER_ERR_DENIED) at once, not after the stall timeout. */
TEST_F(TwoJobsTest, LoadWrongKeyDenied)
{
    if (gSide == 1) {
        auto agent = makeAgent("guarded");
        put("info", encode(agent->getLocalConnectionInfo(), nullptr, 0));
        MEET("done");
    } else {
        setenv("MPIXFER_STALL_TIMEOUT_MS", "10000", 1);
        auto agent = makeAgent(kAgent0);
        unsetenv("MPIXFER_STALL_TIMEOUT_MS");
        std::string text;
        GET("info", text);
        std::string info = text.substr(0, text.find('\n'));
        auto k = info.find("key=");
        ASSERT_NE(k, std::string::npos) << info;
        info[k + 4 + 5] = info[k + 4 + 5] == '0' ? '1' : '0'; /* one hex digit of the key */
        auto const t0 = std::chrono::steady_clock::now();
        std::string err = thrownText([&] { agent->loadRemoteAgent("guarded", info); });
        auto const ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::steady_clock::now() - t0)
                            .count();
        EXPECT_NE(err.find("MPIXFER_ERR_DENIED"), std::string::npos) << err;
        EXPECT_LT(ms, 5000) << "waited for the stall timeout instead of the refusal";
        EXPECT_FALSE(agent->checkRemoteDescs("guarded", MemoryDescs{MemoryType::kDRAM, {}}));
        MEET("done");
    }
}

TEST_F(TwoJobsTest, LoadTimeoutSilentPeer)
{
    if (gSide == 1) {
        auto agent = makeAgent("silent");
        put("info", encode(agent->getLocalConnectionInfo(), nullptr, 0) +
                        std::to_string(::getpid()) + "\n");
        std::string done;
        GET("stopping", done);
        ::raise(SIGSTOP); /* side 0 sends SIGCONT when its load has given up */
        MEET("done");
    } else {
        setenv("MPIXFER_STALL_TIMEOUT_MS", "1000", 1);
        auto agent = makeAgent(kAgent0);
        unsetenv("MPIXFER_STALL_TIMEOUT_MS");
        std::string text;
        GET("info", text);
        std::istringstream s(text);
        std::string info, addr, len, pid;
        std::getline(s, info);
        s >> addr >> len >> pid;
        pid_t const peer = static_cast<pid_t>(std::stol(pid));
        put("stopping");
        /* Until the peer is stopped (its state in /proc is 'T'). */
        bool stopped = false;
        auto const start = std::chrono::steady_clock::now();
        while (!stopped && std::chrono::steady_clock::now() - start < kPollBound) {
            std::ifstream st("/proc/" + std::to_string(peer) + "/stat");
            std::string line;
            std::getline(st, line);
            auto close = line.rfind(')');
            stopped =
                close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'T';
            if (!stopped)
                std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        EXPECT_TRUE(stopped) << "side 1 (pid " << peer << ") did not stop";
        auto const t0 = std::chrono::steady_clock::now();
        std::string err = thrownText([&] { agent->loadRemoteAgent("silent", info); });
        auto const ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::steady_clock::now() - t0)
                            .count();
        ::kill(peer, SIGCONT);
        EXPECT_NE(err.find("MPIXFER_ERR_TIMEOUT"), std::string::npos) << err;
        EXPECT_GE(ms, 900) << "gave up before the stall timeout";
        EXPECT_LT(ms, 10000) << "waited far past the stall timeout";
        EXPECT_FALSE(agent->checkRemoteDescs("silent", MemoryDescs{MemoryType::kDRAM, {}}));
        MEET("done");
    }
}

} // namespace

int main(int argc, char **argv)
{
    ::testing::InitGoogleTest(&argc, argv);
    if (argc != 3 || (std::strcmp(argv[1], "0") != 0 && std::strcmp(argv[1], "1") != 0)) {
        std::fprintf(stderr, "usage: %s [gtest flags] 0|1 DIR\n", argv[0]);
        return 2;
    }
    gSide = argv[1][0] - '0';
    gDir = argv[2];
    return exitCode(RUN_ALL_TESTS());
}
