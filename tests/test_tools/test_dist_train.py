"""tools/dist_train.sh across machines: the launch arguments, and a real two-"node" gloo run on
127.0.0.1 (two launches of the script, one process each) whose ranks end with the same weights,
with the teacher outside DDP and ``find_unused_parameters`` on where the config needs it."""
import os
import os.path as osp
import shutil
import socket
import subprocess
import sys
import textwrap

import torch
from mmengine.config import Config

from helpers import REPO, config_path, save_checkpoint_of
from mmkd.utils.dist import set_find_unused_parameters, unused_parameters_reason

FAKE_PYTHON = '#!/bin/sh\necho "{name}: $*"\n'


def fake_checkout(tmp_path, with_venv: bool) -> str:
    """A copy of tools/dist_*.sh in a checkout whose interpreters only print their arguments."""
    os.makedirs(tmp_path / 'tools')
    for script in ('dist_train.sh', 'dist_test.sh', 'dist_launch.sh'):
        shutil.copy(osp.join(REPO, 'tools', script), tmp_path / 'tools' / script)
    bins = {'path': tmp_path / 'bin'}
    if with_venv:
        bins['venv'] = tmp_path / '.venv' / 'bin'
    for name, folder in bins.items():
        os.makedirs(folder)
        for exe in ('python', 'python3'):
            (folder / exe).write_text(FAKE_PYTHON.format(name=f'{name} {exe}'))
            (folder / exe).chmod(0o755)
    return str(tmp_path)


def run_script(root: str, script: str, args, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items()
               if k not in ('PYTHON', 'NNODES', 'NODE_RANK', 'MASTER_ADDR', 'PORT')}
    environ.update(env, PATH=f'{root}/bin:{os.environ["PATH"]}')
    return subprocess.run(['bash', osp.join(root, 'tools', script), *args], env=environ,
                          capture_output=True, text=True, timeout=60)


def test_dist_scripts_use_the_checkout_venv_and_pass_the_node_settings(tmp_path):
    root = fake_checkout(tmp_path, with_venv=True)
    train = run_script(root, 'dist_train.sh', ['c.py', '4', '--work-dir', 'w'], NNODES='2',
                       NODE_RANK='1', MASTER_ADDR='10.1.2.3', PORT='29612')
    assert train.returncode == 0, train.stderr
    assert train.stdout.strip() == (
        f'venv python: -m torch.distributed.run --nnodes=2 --node_rank=1 '
        f'--master_addr=10.1.2.3 --master_port=29612 --nproc_per_node=4 {root}/tools/train.py '
        'c.py --launcher pytorch --work-dir w')
    test = run_script(root, 'dist_test.sh', ['c.py', 'x.pth', '2'], PYTHON=f'{root}/bin/python')
    assert test.stdout.strip() == (
        f'path python: -m torch.distributed.run --nnodes=1 --node_rank=0 '
        f'--master_addr=127.0.0.1 --master_port=29500 --nproc_per_node=2 {root}/tools/test.py '
        'c.py x.pth --launcher pytorch')


def test_dist_scripts_without_a_venv_and_with_wrong_arguments(tmp_path):
    root = fake_checkout(tmp_path, with_venv=False)
    assert run_script(root, 'dist_train.sh', ['c.py', '1']).stdout.startswith('path python3: ')
    missing = run_script(root, 'dist_train.sh', ['c.py'])
    assert missing.returncode == 2 and 'usage:' in missing.stderr and not missing.stdout
    not_a_number = run_script(root, 'dist_test.sh', ['c.py', 'x.pth', 'two'])
    assert not_a_number.returncode == 2 and 'positive integer' in not_a_number.stderr
    no_master = run_script(root, 'dist_train.sh', ['c.py', '1'], NNODES='2', NODE_RANK='1')
    assert no_master.returncode == 2 and 'set MASTER_ADDR' in no_master.stderr
    rank_too_high = run_script(root, 'dist_train.sh', ['c.py', '1'], NNODES='2', NODE_RANK='2',
                               MASTER_ADDR='127.0.0.1')
    assert rank_too_high.returncode == 2 and 'NODE_RANK < NNODES' in rank_too_high.stderr


def test_find_unused_parameters_only_where_parameters_go_unused():
    kd = Config.fromfile(config_path('digits/kd_resnet18_w32_w4.py'))
    assert unused_parameters_reason(kd) is None
    assert set_find_unused_parameters(kd) is None and 'find_unused_parameters' not in kd
    two_stage = Config.fromfile(config_path('digits/fsp_two_stage_resnet18_w32_w4.py'))
    assert 'DistillSwitchHook' in set_find_unused_parameters(two_stage)
    assert two_stage.find_unused_parameters is True
    fsp_stage_one = Config.fromfile(config_path('digits/fsp_two_stage_resnet18_w32_w4.py'))
    fsp_stage_one.custom_hooks = []
    assert 'calculate_student_loss=False' in unused_parameters_reason(fsp_stage_one)
    wrapped = Config.fromfile(config_path('digits/fsp_two_stage_resnet18_w32_w4.py'))
    wrapped.model_wrapper_cfg = dict(type='MMDistributedDataParallel', broadcast_buffers=True)
    set_find_unused_parameters(wrapped)
    assert wrapped.model_wrapper_cfg == dict(type='MMDistributedDataParallel',
                                             broadcast_buffers=True, find_unused_parameters=True)
    chosen = Config.fromfile(config_path('digits/fsp_two_stage_resnet18_w32_w4.py'))
    chosen.find_unused_parameters = False  # the user's choice stays
    assert set_find_unused_parameters(chosen) is None and chosen.find_unused_parameters is False


# -- two "nodes" -------------------------------------------------------------------------------
SNAPSHOT_HOOK = '''
import os.path as osp

import torch
import torch.distributed as dist
from mmengine.hooks import Hook

from mmkd.registry import HOOKS


@HOOKS.register_module()
class RankSnapshotHook(Hook):
    """Test only: after training, save this rank's weights and what its DDP wrapper syncs."""

    def after_train(self, runner):
        ddp = runner.model
        synced = {id(p) for p in ddp._module_parameters}
        buffers = {id(b) for b in ddp.modules_buffers}
        module = ddp.module
        info = dict(rank=dist.get_rank(), world_size=dist.get_world_size(),
                    backend=dist.get_backend(), wrapper=type(ddp).__name__,
                    device_ids=ddp.device_ids, find_unused=ddp.find_unused_parameters,
                    broadcast_buffers=ddp.broadcast_buffers,
                    ignored=sorted(ddp.parameters_to_ignore),
                    synced=[n for n, p in module.named_parameters() if id(p) in synced],
                    broadcast=[n for n, b in module.named_buffers() if id(b) in buffers],
                    iters=runner.iter)
        torch.save(dict(state_dict=module.state_dict(), info=info),
                   osp.join(runner.work_dir, f'rank{info["rank"]}.pth'))
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def two_node_config(tmp_path) -> str:
    """FitNets on digits, 7 iterations per rank, distillation switched off after 2: the
    connector then gets no gradient, which DDP only accepts with find_unused_parameters."""
    teacher_cfg = Config.fromfile(config_path('digits/teacher_resnet18_w32.py'))
    ckpt = save_checkpoint_of(teacher_cfg.model.to_dict(), str(tmp_path / 'teacher.pth'))
    (tmp_path / 'rank_snapshot_hook.py').write_text(SNAPSHOT_HOOK)
    config = tmp_path / 'fitnets_two_nodes.py'
    config.write_text(textwrap.dedent(f'''
        _base_ = [{config_path('digits/fitnets_resnet18_w32_w4.py')!r}]
        custom_imports = dict(imports=['rank_snapshot_hook'], allow_failed_imports=False)
        model = dict(teacher_ckpt={ckpt!r})
        train_dataloader = dict(batch_size=16)
        custom_hooks = [dict(type='DistillSwitchHook', stop_at=2, by_epoch=False),
                        dict(type='RankSnapshotHook')]
        train_cfg = dict(max_epochs=1)
        param_scheduler = dict(T_max=1, end=1)
        val_dataloader = None
        val_cfg = None
        val_evaluator = None
        default_hooks = dict(checkpoint=dict(interval=1), logger=dict(interval=1))
        '''))
    return str(config)


def test_two_nodes_on_gloo_train_the_same_weights(tmp_path):
    config, work_dir = two_node_config(tmp_path), str(tmp_path / 'work')
    env = dict(os.environ, PYTHON=sys.executable, NNODES='2', MASTER_ADDR='127.0.0.1',
               PORT=str(free_port()), OMP_NUM_THREADS='1',
               PYTHONPATH=f'{tmp_path}{os.pathsep}{os.environ.get("PYTHONPATH", "")}')
    nodes = [subprocess.Popen(['bash', osp.join(REPO, 'tools', 'dist_train.sh'), config, '1',
                               '--work-dir', work_dir], env=dict(env, NODE_RANK=str(rank)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    try:
        outputs = [node.communicate(timeout=600)[0] for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    for rank, (node, output) in enumerate(zip(nodes, outputs)):
        assert node.returncode == 0, f'node {rank}:\n{output[-3000:]}'
    assert 'find_unused_parameters=True, because DistillSwitchHook' in outputs[0]

    ranks = [torch.load(osp.join(work_dir, f'rank{r}.pth'), weights_only=True) for r in (0, 1)]
    info = ranks[0]['info']
    assert [r['info']['rank'] for r in ranks] == [0, 1] and info['world_size'] == 2
    assert info['backend'] == 'gloo' and info['wrapper'] == 'MMDistributedDataParallel'
    assert info['device_ids'] is None and info['find_unused'] and not info['broadcast_buffers']
    assert info['iters'] == 7 == ranks[1]['info']['iters']
    # the teacher is outside DDP: ignored, neither reduced nor broadcast
    state = ranks[0]['state_dict']
    teacher_keys = {k for k in state if k.startswith('teacher.')}
    assert teacher_keys and teacher_keys <= set(info['ignored'])
    assert not [n for n in info['synced'] + info['broadcast'] if n.startswith('teacher.')]
    assert any(n.startswith('distiller.') for n in info['synced'])  # the hint's connector
    assert any(n.startswith('student.') for n in info['synced'])
    # every synced parameter is bit-identical on both ranks, and in rank 0's checkpoint
    checkpoint = torch.load(osp.join(work_dir, 'epoch_1.pth'), weights_only=True)['state_dict']
    for name in info['synced']:
        assert torch.equal(ranks[1]['state_dict'][name], state[name]), name
        assert torch.equal(checkpoint[name], state[name]), name
    initial = torch.load(str(tmp_path / 'teacher.pth'), weights_only=True)['state_dict']
    assert all(torch.equal(state[f'teacher.{k}'], v) for k, v in initial.items())
