import sys; sys.path.insert(0, "tests/integration")
import os, fakehost
import test_points as tp
def test_explore(host):
    tp.config()
    print(tp.prepare())
    host.clear_log()
    host.fail(tp.HAND_BACK[0][0], "EIO", count=1, value="0")
    print(tp.hook("--verbose", "win10", "release", "end", "-"))
    for w in host.log(): print("R", w)
    print(open(tp.JOURNAL).read())
    host.clear_log()
    print(tp.hook("--verbose", "--recover", "win10"))
    for w in host.log(): print("C", w)
    print(host.snapshot()["vtcon"])
