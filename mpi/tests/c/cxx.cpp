// A C++ program through dosmpicxx: the header works from C++, handles are
// usable as map keys and in containers, and the collectives work on vectors.
#include <mpi.h>

#include <cstdio>
#include <map>
#include <numeric>
#include <vector>

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank = 0, size = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    std::vector<double> mine(1000);
    std::iota(mine.begin(), mine.end(), rank);
    std::vector<double> sum(mine.size());
    MPI_Allreduce(mine.data(), sum.data(), static_cast<int>(mine.size()), MPI_DOUBLE, MPI_SUM,
                  MPI_COMM_WORLD);
    bool good = true;
    for (std::size_t i = 0; i < sum.size(); i++)
        good = good && sum[i] == static_cast<double>(size) * i + size * (size - 1) / 2.0;
    std::map<MPI_Datatype, int> sizes;
    for (MPI_Datatype t : {MPI_INT, MPI_DOUBLE, MPI_CXX_BOOL, MPI_CXX_DOUBLE_COMPLEX}) {
        int s = 0;
        MPI_Type_size(t, &s);
        sizes[t] = s;
    }
    good = good && sizes[MPI_INT] == 4 && sizes[MPI_DOUBLE] == 8 && sizes[MPI_CXX_BOOL] == 1 &&
           sizes[MPI_CXX_DOUBLE_COMPLEX] == 16;
    std::vector<int> all(size);
    MPI_Gather(&rank, 1, MPI_INT, all.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (rank == 0)
        for (int i = 0; i < size; i++) good = good && all[i] == i;
    int ok = good ? 1 : 0, allok = 0;
    MPI_Allreduce(&ok, &allok, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
    if (rank == 0) {
        if (allok)
            std::printf("OK cxx %d ranks\n", size);
        else
            std::printf("FAILED cxx\n");
    }
    MPI_Finalize();
    return allok ? 0 : 1;
}
