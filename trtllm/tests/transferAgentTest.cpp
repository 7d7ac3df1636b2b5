/* TensorRT-LLM's transferAgentTest cases, written anew against libtensorrt_llm_mpixfer_wrapper.so
 * loaded by dlopen/dlsym: every agent in this one process, no mpirun (the adapter starts MPI
 * itself), or under `mpiexec -n 1`. Agents use TensorRT-LLM's config {name, true, false, true};
 * remotes are loaded by connection info and polled with checkRemoteDescs. */
#include "agentTestUtils.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>

using namespace mpixfer_trtllm_test;

namespace {

class TransferAgentTest : public ::testing::Test {};

/* Loads @p remote into @p agent by its connection info and polls until @p descs are there. */
void connect(BaseTransferAgent &agent, BaseTransferAgent &remote, std::string const &remoteName,
             MemoryDescs const &descs)
{
    agent.loadRemoteAgent(remoteName, remote.getLocalConnectionInfo());
    ASSERT_TRUE(waitRemoteDescs(agent, remoteName, descs));
}

TEST_F(TransferAgentTest, Basic)
{
    std::string const agent0{"agent0"}, agent1{"agent1"};
    auto xferAgent0 = makeAgent(agent0);
    auto xferAgent1 = makeAgent(agent1);

    std::vector<char> memory0(100, 10);
    std::vector<char> memory1(100, 1);
    RegisterDescs regMem0{MemoryType::kDRAM, {MemoryDesc{memory0}}};
    RegisterDescs regMem1{MemoryType::kDRAM, {MemoryDesc{memory1}}};
    xferAgent0->registerMemory(regMem0);
    xferAgent1->registerMemory(regMem1);

    connect(*xferAgent0, *xferAgent1, agent1, regMem1);

    TransferRequest writeReq{TransferOp::kWRITE, regMem0, regMem1, agent1};
    auto status = xferAgent0->submitTransferRequests(writeReq);
    EXPECT_EQ(status->wait(), TransferState::kSUCCESS);
    EXPECT_TRUE(status->isCompleted());
    EXPECT_EQ(memory0, memory1);
    EXPECT_EQ(memory1, std::vector<char>(100, 10));

    xferAgent0->deregisterMemory(regMem0);
    xferAgent1->deregisterMemory(regMem1);
}

TEST_F(TransferAgentTest, Basic2)
{
    std::string const agent0{"agent0"}, agent1{"agent1"};
    auto xferAgent0 = makeAgent(agent0);
    auto xferAgent1 = makeAgent(agent1);

    std::vector<char> memory0(100, 10);
    std::vector<char> memory1(100, 1);
    RegisterDescs regMem0{MemoryType::kDRAM, {MemoryDesc{memory0}}};
    RegisterDescs regMem1{MemoryType::kDRAM, {MemoryDesc{memory1}}};
    xferAgent0->registerMemory(regMem0);
    xferAgent1->registerMemory(regMem1);

    connect(*xferAgent0, *xferAgent1, agent1, regMem1);

    TransferRequest readReq{TransferOp::kREAD, regMem0, regMem1, agent1};
    auto status = xferAgent0->submitTransferRequests(readReq);
    EXPECT_EQ(status->wait(), TransferState::kSUCCESS);
    EXPECT_EQ(memory0, memory1);
    EXPECT_EQ(memory0, std::vector<char>(100, 1));

    xferAgent0->deregisterMemory(regMem0);
    xferAgent1->deregisterMemory(regMem1);
}

TEST_F(TransferAgentTest, Connect)
{
    std::string const agent0{"agent0"}, agent1{"agent1"}, agent2{"agent2"};
    auto xferAgent0 = makeAgent(agent0);
    auto xferAgent1 = makeAgent(agent1);
    auto xferAgent2 = makeAgent(agent2);

    std::vector<char> memory0(100, 10);
    std::vector<char> memory1(100, 1);
    MemoryDescs memDescs0{MemoryType::kDRAM, {MemoryDesc{memory0}}};
    MemoryDescs memDescs1{MemoryType::kDRAM, {MemoryDesc{memory1}}};
    xferAgent0->registerMemory(memDescs0);
    xferAgent1->registerMemory(memDescs1);
    xferAgent2->registerMemory(memDescs0);

    auto connectionInfo = xferAgent1->getLocalConnectionInfo();
    xferAgent0->loadRemoteAgent(agent1, connectionInfo);
    ASSERT_TRUE(waitRemoteDescs(*xferAgent0, agent1, memDescs1));
    TransferRequest writeReq{TransferOp::kWRITE, memDescs0, memDescs1, agent1};
    auto status = xferAgent0->submitTransferRequests(writeReq);
    EXPECT_EQ(status->wait(), TransferState::kSUCCESS);
    EXPECT_EQ(memory0, memory1);

    /* agent2 uses the same connection info; fresh bytes so its WRITE is seen. */
    std::fill(memory0.begin(), memory0.end(), 7);
    std::fill(memory1.begin(), memory1.end(), 1);
    xferAgent2->loadRemoteAgent(agent1, connectionInfo);
    ASSERT_TRUE(waitRemoteDescs(*xferAgent2, agent1, memDescs1));
    TransferRequest writeReq2{TransferOp::kWRITE, memDescs0, memDescs1, agent1};
    auto status2 = xferAgent2->submitTransferRequests(writeReq2);
    EXPECT_EQ(status2->wait(), TransferState::kSUCCESS);
    EXPECT_EQ(memory0, memory1);
    EXPECT_EQ(memory1, std::vector<char>(100, 7));

    xferAgent0->deregisterMemory(memDescs0);
    xferAgent1->deregisterMemory(memDescs1);
    xferAgent2->deregisterMemory(memDescs0);
}

TEST_F(TransferAgentTest, SyncMessage)
{
    std::string const agent0{"agent0"}, agent1{"agent1"};
    auto xferAgent0 = makeAgent(agent0);
    auto xferAgent1 = makeAgent(agent1);

    std::vector<char> memory0(100, 10);
    std::vector<char> memory1(100, 1);
    RegisterDescs regMem0{MemoryType::kDRAM, {MemoryDesc{memory0}}};
    RegisterDescs regMem1{MemoryType::kDRAM, {MemoryDesc{memory1}}};
    xferAgent0->registerMemory(regMem0);
    xferAgent1->registerMemory(regMem1);

    connect(*xferAgent0, *xferAgent1, agent1, regMem1);

    /* A WRITE, then a separate notification. */
    std::string const syncMessage{"agent_sync_message"};
    TransferRequest writeReq{TransferOp::kWRITE, regMem0, regMem1, agent1};
    auto status = xferAgent0->submitTransferRequests(writeReq);
    xferAgent0->notifySyncMessage(agent1, syncMessage);

    auto notif = waitNotified(*xferAgent1);
    EXPECT_TRUE(waitCompleted(*status));
    EXPECT_EQ(status->wait(), TransferState::kSUCCESS);
    ASSERT_EQ(notif.size(), 1u);
    ASSERT_EQ(notif[agent0].size(), 1u);
    EXPECT_EQ(notif[agent0][0], syncMessage);
    EXPECT_EQ(memory0, memory1);

    /* A second message alone: drained, so only it is there. */
    std::string const syncMessage2{"two_agent_sync_message"};
    xferAgent0->notifySyncMessage(agent1, syncMessage2);
    auto notif2 = waitNotified(*xferAgent1);
    ASSERT_EQ(notif2.size(), 1u);
    ASSERT_EQ(notif2[agent0].size(), 1u);
    EXPECT_EQ(notif2[agent0][0], syncMessage2);
    EXPECT_TRUE(xferAgent1->getNotifiedSyncMessages().empty());

    /* The reverse direction: notify straight after an asynchronous load. */
    auto connectionInfo0 = xferAgent0->getLocalConnectionInfo();
    xferAgent1->loadRemoteAgent(agent0, connectionInfo0);
    std::string const syncMessage3{"three_agent_sync_message"};
    xferAgent1->notifySyncMessage(agent0, syncMessage3);
    auto notif3 = waitNotified(*xferAgent0);
    ASSERT_EQ(notif3.size(), 1u);
    ASSERT_EQ(notif3[agent1].size(), 1u);
    EXPECT_EQ(notif3[agent1][0], syncMessage3);

    /* A WRITE back into a buffer both agents registered, with its sync message: the bytes
     * are in place when the message is seen. */
    std::vector<char> memory2(100, 5);
    RegisterDescs regMem2{MemoryType::kDRAM, {MemoryDesc{memory2}}};
    xferAgent1->registerMemory(regMem2);
    xferAgent0->registerMemory(regMem1); /* memory1: registered in both agents now */
    /* agent1's copy of agent0's descriptor predates that registration: load it again. */
    xferAgent1->loadRemoteAgent(agent0, xferAgent0->getLocalConnectionInfo());
    ASSERT_TRUE(waitRemoteDescs(*xferAgent1, agent0, regMem1));
    std::string const syncMessage4{"four_agent_sync_message"};
    TransferRequest writeReq1{TransferOp::kWRITE, regMem2, regMem1, agent0, syncMessage4};
    auto status1 = xferAgent1->submitTransferRequests(writeReq1);
    auto notif4 = waitNotified(*xferAgent0);
    ASSERT_EQ(notif4.size(), 1u);
    ASSERT_EQ(notif4[agent1].size(), 1u);
    EXPECT_EQ(notif4[agent1][0], syncMessage4);
    EXPECT_EQ(memory1, std::vector<char>(100, 5));
    EXPECT_EQ(status1->wait(), TransferState::kSUCCESS);

    /* A binary message: NUL bytes and high bytes arrive exactly. */
    std::string const binary("\0bin\0ary\xff\x01\0", 12);
    ASSERT_EQ(binary.size(), 12u);
    xferAgent0->notifySyncMessage(agent1, binary);
    xferAgent0->notifySyncMessage(agent1, std::string());
    auto notif5 = waitNotified(*xferAgent1);
    for (int i = 0; i < 100 && notif5[agent0].size() < 2; i++) {
        auto more = xferAgent1->getNotifiedSyncMessages();
        for (auto &m : more[agent0])
            notif5[agent0].push_back(m);
    }
    ASSERT_EQ(notif5[agent0].size(), 2u);
    EXPECT_EQ(notif5[agent0][0], binary);
    EXPECT_EQ(notif5[agent0][1], std::string());

    xferAgent0->deregisterMemory(regMem0);
    xferAgent0->deregisterMemory(regMem1);
    xferAgent1->deregisterMemory(regMem1);
    xferAgent1->deregisterMemory(regMem2);
}

TEST_F(TransferAgentTest, DeviceMemory)
{
    TRTLLM_SKIP_WITHOUT_GPU();
#if defined(TRTLLM_TEST_HAVE_CUDA)
    std::string const agent0{"agent0"}, agent1{"agent1"};
    auto xferAgent0 = makeAgent(agent0);
    auto xferAgent1 = makeAgent(agent1);

    char *devPtr0 = nullptr;
    char *devPtr1 = nullptr;
    size_t const size = 100;
    ASSERT_EQ(cudaMalloc(reinterpret_cast<void **>(&devPtr0), size), cudaSuccess);
    ASSERT_EQ(cudaMalloc(reinterpret_cast<void **>(&devPtr1), size), cudaSuccess);
    std::vector<char> memory0(size, 10);
    std::vector<char> memory1(size, 1);
    ASSERT_EQ(cudaMemcpy(devPtr0, memory0.data(), size, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(devPtr1, memory1.data(), size, cudaMemcpyHostToDevice), cudaSuccess);
    RegisterDescs regMem0{MemoryType::kVRAM, {MemoryDesc{devPtr0, size, 0}}};
    RegisterDescs regMem1{MemoryType::kVRAM, {MemoryDesc{devPtr1, size, 0}}};
    xferAgent0->registerMemory(regMem0);
    xferAgent1->registerMemory(regMem1);

    connect(*xferAgent0, *xferAgent1, agent1, regMem1);
    TransferRequest writeReq{TransferOp::kWRITE, regMem0, regMem1, agent1};
    auto status = xferAgent0->submitTransferRequests(writeReq);
    EXPECT_EQ(status->wait(), TransferState::kSUCCESS);
    std::vector<char> back(size, 0);
    ASSERT_EQ(cudaMemcpy(back.data(), devPtr1, size, cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(back, memory0);

    xferAgent0->deregisterMemory(regMem0);
    xferAgent1->deregisterMemory(regMem1);
    cudaFree(devPtr0);
    cudaFree(devPtr1);
#endif
}

/* wait(0) on a 40 MB transfer is one poll; then it ends in SUCCESS with the bytes there. */
TEST_F(TransferAgentTest, WaitZeroLarge)
{
    std::string const agent0{"agent0"}, agent1{"agent1"};
    auto xferAgent0 = makeAgent(agent0);
    auto xferAgent1 = makeAgent(agent1);

    size_t const size = 40u << 20;
    std::vector<char> memory0(size);
    std::vector<char> memory1(size, 0);
    for (size_t i = 0; i < size; i++)
        memory0[i] = static_cast<char>(i * 31 + 7);
    RegisterDescs regMem0{MemoryType::kDRAM, {MemoryDesc{memory0}}};
    RegisterDescs regMem1{MemoryType::kDRAM, {MemoryDesc{memory1}}};
    xferAgent0->registerMemory(regMem0);
    xferAgent1->registerMemory(regMem1);
    connect(*xferAgent0, *xferAgent1, agent1, regMem1);

    TransferRequest writeReq{TransferOp::kWRITE, regMem0, regMem1, agent1};
    auto status = xferAgent0->submitTransferRequests(writeReq);
    TransferState first = status->wait(0);
    EXPECT_TRUE(first == TransferState::kIN_PROGRESS || first == TransferState::kSUCCESS);
    EXPECT_EQ(status->wait(), TransferState::kSUCCESS);
    EXPECT_TRUE(status->isCompleted());
    EXPECT_TRUE(memory0 == memory1);

    /* A bounded wait on a finished transfer is SUCCESS at once. */
    EXPECT_EQ(status->wait(1000), TransferState::kSUCCESS);

    xferAgent0->deregisterMemory(regMem0);
    xferAgent1->deregisterMemory(regMem1);
}

/* After invalidateRemoteAgent, a transfer to it throws at submit or ends in FAILURE. */
TEST_F(TransferAgentTest, InvalidateThenSubmit)
{
    std::string const agent0{"agent0"}, agent1{"agent1"};
    auto xferAgent0 = makeAgent(agent0);
    auto xferAgent1 = makeAgent(agent1);

    std::vector<char> memory0(100, 10);
    std::vector<char> memory1(100, 1);
    RegisterDescs regMem0{MemoryType::kDRAM, {MemoryDesc{memory0}}};
    RegisterDescs regMem1{MemoryType::kDRAM, {MemoryDesc{memory1}}};
    xferAgent0->registerMemory(regMem0);
    xferAgent1->registerMemory(regMem1);
    connect(*xferAgent0, *xferAgent1, agent1, regMem1);

    xferAgent0->invalidateRemoteAgent(agent1);
    EXPECT_FALSE(xferAgent0->checkRemoteDescs(agent1, regMem1));
    TransferRequest writeReq{TransferOp::kWRITE, regMem0, regMem1, agent1};
    std::unique_ptr<TransferStatus> status;
    std::string text = thrownText([&] { status = xferAgent0->submitTransferRequests(writeReq); });
    if (text.empty()) {
        ASSERT_NE(status, nullptr);
        EXPECT_EQ(status->wait(), TransferState::kFAILURE);
    } else {
        EXPECT_NE(text.find("MPIXFER_ERR_NOT_FOUND"), std::string::npos) << text;
    }
    EXPECT_EQ(memory1, std::vector<char>(100, 1)) << "nothing may move after invalidation";
    /* Invalidating again is harmless; loading again makes it usable again. */
    xferAgent0->invalidateRemoteAgent(agent1);
    connect(*xferAgent0, *xferAgent1, agent1, regMem1);
    auto status2 = xferAgent0->submitTransferRequests(writeReq);
    EXPECT_EQ(status2->wait(), TransferState::kSUCCESS);
    EXPECT_EQ(memory1, memory0);

    xferAgent0->deregisterMemory(regMem0);
    xferAgent1->deregisterMemory(regMem1);
}

/* Loading by AgentDesc (binary blob), and the errors: the status name is in the text. */
TEST_F(TransferAgentTest, AgentDescAndErrors)
{
    std::string const agent0{"agent0"}, agent1{"agent1"};
    auto xferAgent0 = makeAgent(agent0);
    auto xferAgent1 = makeAgent(agent1);

    std::vector<char> memory0(100, 10);
    std::vector<char> memory1(100, 1);
    RegisterDescs regMem0{MemoryType::kDRAM, {MemoryDesc{memory0}}};
    RegisterDescs regMem1{MemoryType::kDRAM, {MemoryDesc{memory1}}};
    xferAgent0->registerMemory(regMem0);
    xferAgent1->registerMemory(regMem1);

    AgentDesc desc1 = xferAgent1->getLocalAgentDesc();
    EXPECT_FALSE(desc1.getBackendAgentDesc().empty());
    std::string text = thrownText([&] { xferAgent0->loadRemoteAgent("agent2", desc1); });
    EXPECT_NE(text.find("MPIXFER_ERR_INVALID_ARG"), std::string::npos) << text;
    xferAgent0->loadRemoteAgent(agent1, desc1);
    EXPECT_TRUE(xferAgent0->checkRemoteDescs(agent1, regMem1));

    TransferRequest writeReq{TransferOp::kWRITE, regMem0, regMem1, agent1};
    EXPECT_EQ(xferAgent0->submitTransferRequests(writeReq)->wait(), TransferState::kSUCCESS);
    EXPECT_EQ(memory0, memory1);

    text = thrownText([&] { xferAgent0->registerMemory(regMem0); });
    EXPECT_NE(text.find("MPIXFER_ERR_EXISTS"), std::string::npos) << text;
    text = thrownText([&] { xferAgent0->loadRemoteAgent(agent1, AgentDesc{std::string("xx")}); });
    EXPECT_NE(text.find("MPIXFER_ERR_BAD_DESC"), std::string::npos) << text;
    text = thrownText([&] { xferAgent0->notifySyncMessage("nobody", "hello"); });
    EXPECT_NE(text.find("MPIXFER_ERR_NOT_FOUND"), std::string::npos) << text;
    text = thrownText([&] { (void)makeAgent(agent0); });
    EXPECT_NE(text.find("MPIXFER_ERR_EXISTS"), std::string::npos) << text;
    std::vector<char> outside(100, 3);
    TransferRequest badReq{TransferOp::kWRITE, regMem0,
                           MemoryDescs{MemoryType::kDRAM, {MemoryDesc{outside}}}, agent1};
    text = thrownText([&] { (void)xferAgent0->submitTransferRequests(badReq); });
    EXPECT_NE(text.find("MPIXFER_ERR_NOT_FOUND"), std::string::npos) << text;

    xferAgent0->deregisterMemory(regMem0);
    xferAgent1->deregisterMemory(regMem1);
}

/* loadRemoteAgent by connection info returns once usable, or throws after the stall
 * timeout when the remote never answers (here: it is gone). */
TEST_F(TransferAgentTest, LoadTimeout)
{
    setenv("MPIXFER_STALL_TIMEOUT_MS", "300", 1);
    auto xferAgent0 = makeAgent("agent0");
    unsetenv("MPIXFER_STALL_TIMEOUT_MS");
    std::string info;
    {
        auto xferAgent1 = makeAgent("agent1");
        info = xferAgent1->getLocalConnectionInfo();
    }
    auto const start = std::chrono::steady_clock::now();
    std::string text = thrownText([&] { xferAgent0->loadRemoteAgent("agent1", info); });
    auto const ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
    EXPECT_NE(text.find("MPIXFER_ERR_TIMEOUT"), std::string::npos) << text;
    EXPECT_LT(ms, 10000);
    EXPECT_FALSE(xferAgent0->checkRemoteDescs("agent1", MemoryDescs{MemoryType::kDRAM, {}}));
}

/* multiThread: several threads submit on one pair of agents at once. */
TEST_F(TransferAgentTest, MultiThreadSubmit)
{
    std::string const agent0{"agent0"}, agent1{"agent1"};
    auto xferAgent0 = makeAgent(agent0, true);
    auto xferAgent1 = makeAgent(agent1, true);

    constexpr int kThreads = 4;
    constexpr int kRounds = 50;
    constexpr size_t kBlock = 4096;
    std::vector<char> src(kThreads * kBlock);
    std::vector<char> dst(kThreads * kBlock, 0);
    for (size_t i = 0; i < src.size(); i++)
        src[i] = static_cast<char>(i % 251);
    RegisterDescs regSrc{MemoryType::kDRAM, {MemoryDesc{src}}};
    RegisterDescs regDst{MemoryType::kDRAM, {MemoryDesc{dst}}};
    xferAgent0->registerMemory(regSrc);
    xferAgent1->registerMemory(regDst);
    connect(*xferAgent0, *xferAgent1, agent1, regDst);

    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; t++)
        threads.emplace_back([&, t] {
            MemoryDescs s{MemoryType::kDRAM, {MemoryDesc{src.data() + t * kBlock, kBlock, 0}}};
            MemoryDescs d{MemoryType::kDRAM, {MemoryDesc{dst.data() + t * kBlock, kBlock, 0}}};
            for (int r = 0; r < kRounds; r++) {
                TransferRequest req{TransferOp::kWRITE, s, d, agent1};
                try {
                    auto status = xferAgent0->submitTransferRequests(req);
                    if (status->wait() != TransferState::kSUCCESS)
                        failures++;
                } catch (std::exception const &) {
                    failures++;
                }
            }
        });
    for (auto &th : threads)
        th.join();
    EXPECT_EQ(failures.load(), 0);
    EXPECT_EQ(src, dst);

    xferAgent0->deregisterMemory(regSrc);
    xferAgent1->deregisterMemory(regDst);
}

/* ------------------------------------------------------------------------- loopback */

class LoopbackAgentTest : public ::testing::TestWithParam<bool> {
  protected:
    void SetUp() override
    {
        char tmpl[] = "/tmp/mpixfer-trtllm-loopback.XXXXXX";
        char *dir = mkdtemp(tmpl);
        ASSERT_NE(dir, nullptr) << std::strerror(errno);
        mDir = dir;
    }

    void TearDown() override
    {
        for (auto const &f : mFiles)
            std::remove(f.c_str());
        if (!mDir.empty())
            rmdir(mDir.c_str());
    }

    std::string file(int i)
    {
        std::string f = mDir + "/file" + std::to_string(i);
        mFiles.push_back(f);
        return f;
    }

    FileDescs openFiles(int n, size_t len, int flags)
    {
        std::vector<FileDesc> v;
        for (int i = 0; i < n; i++)
            v.emplace_back(mDir + "/file" + std::to_string(i), flags, 0664, len);
        return FileDescs{std::move(v)};
    }

    std::shared_ptr<BaseLoopbackAgent> makeAgent()
    {
        BaseAgentConfig config{"loopback", true, GetParam(), true, 4};
        return makeLoopbackAgent(&config);
    }

    std::string mDir;
    std::vector<std::string> mFiles;
};

TEST_P(LoopbackAgentTest, DramToFileAndBack)
{
    constexpr int kFiles = 3;
    constexpr size_t kLen = 1 << 20;
    auto agent = makeAgent();
    std::vector<std::vector<char>> mem(kFiles);
    std::vector<MemoryDesc> descs;
    for (int i = 0; i < kFiles; i++) {
        (void)file(i);
        mem[i].resize(kLen);
        for (size_t j = 0; j < kLen; j++)
            mem[i][j] = static_cast<char>((j * 13 + i * 101) & 0xff);
        descs.emplace_back(mem[i]);
    }
    MemoryDescs memDescs{MemoryType::kDRAM, descs};
    {
        FileDescs files = openFiles(kFiles, kLen, O_CREAT | O_RDWR | O_TRUNC);
        agent->executeLoopbackRequest(memDescs, files, true);
    }
    /* The files hold the bytes (read back with plain POSIX calls). */
    for (int i = 0; i < kFiles; i++) {
        std::vector<char> onDisk(kLen);
        int fd = ::open((mDir + "/file" + std::to_string(i)).c_str(), O_RDONLY);
        ASSERT_GE(fd, 0);
        EXPECT_EQ(::pread(fd, onDisk.data(), kLen, 0), static_cast<ssize_t>(kLen));
        ::close(fd);
        EXPECT_TRUE(onDisk == mem[i]) << "file " << i;
    }
    /* And load them back into cleared memory. */
    auto const expect = mem;
    for (auto &m : mem)
        std::fill(m.begin(), m.end(), 0);
    {
        FileDescs files = openFiles(kFiles, kLen, O_RDONLY);
        agent->executeLoopbackRequest(memDescs, files, false);
    }
    EXPECT_TRUE(mem == expect);

    /* A read past the end of a file is an error, not a partial success. */
    std::vector<char> big(2 * kLen);
    MemoryDescs bigDescs{MemoryType::kDRAM, {MemoryDesc{big}}};
    FileDescs shortFile = openFiles(1, 2 * kLen, O_RDONLY);
    std::string text =
        thrownText([&] { agent->executeLoopbackRequest(bigDescs, shortFile, false); });
    EXPECT_NE(text.find("MPIXFER_ERR_IO"), std::string::npos) << text;
}

TEST_P(LoopbackAgentTest, VramToFileAndBack)
{
    TRTLLM_SKIP_WITHOUT_GPU();
#if defined(TRTLLM_TEST_HAVE_CUDA)
    constexpr int kFiles = 2;
    constexpr size_t kLen = 1 << 20;
    auto agent = makeAgent();
    std::vector<char *> dev(kFiles, nullptr);
    std::vector<std::vector<char>> host(kFiles, std::vector<char>(kLen));
    std::vector<MemoryDesc> descs;
    for (int i = 0; i < kFiles; i++) {
        (void)file(i);
        for (size_t j = 0; j < kLen; j++)
            host[i][j] = static_cast<char>((j * 7 + i * 3) & 0xff);
        ASSERT_EQ(cudaMalloc(reinterpret_cast<void **>(&dev[i]), kLen), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(dev[i], host[i].data(), kLen, cudaMemcpyHostToDevice), cudaSuccess);
        descs.emplace_back(dev[i], kLen, 0);
    }
    MemoryDescs memDescs{MemoryType::kVRAM, descs};
    {
        FileDescs files = openFiles(kFiles, kLen, O_CREAT | O_RDWR | O_TRUNC);
        agent->executeLoopbackRequest(memDescs, files, true);
    }
    for (int i = 0; i < kFiles; i++)
        ASSERT_EQ(cudaMemset(dev[i], 0, kLen), cudaSuccess);
    {
        FileDescs files = openFiles(kFiles, kLen, O_RDONLY);
        agent->executeLoopbackRequest(memDescs, files, false);
    }
    for (int i = 0; i < kFiles; i++) {
        std::vector<char> back(kLen);
        ASSERT_EQ(cudaMemcpy(back.data(), dev[i], kLen, cudaMemcpyDeviceToHost), cudaSuccess);
        EXPECT_TRUE(back == host[i]) << "buffer " << i;
        cudaFree(dev[i]);
    }
#endif
}

INSTANTIATE_TEST_SUITE_P(MultiThread, LoopbackAgentTest, ::testing::Values(true, false),
                         [](::testing::TestParamInfo<bool> const &info) {
                             return info.param ? "MultiThread" : "SingleThread";
                         });

} // namespace

int main(int argc, char **argv)
{
    ::testing::InitGoogleTest(&argc, argv);
    return exitCode(RUN_ALL_TESTS());
}
