"""The curated mutants: bugs planted one at a time, each with the tests that must catch it.

Every entry replaces one exact, unique piece of ``server/perceiver_serve`` (so a mutant whose
code moved fails loudly instead of silently testing nothing) and names the fastest tests that
kill it. ``make mutants`` runs them all; ``tests/mutants/test_catalogue.py`` checks in every
``make test`` that each replacement still applies.

The first eleven are issue 20's: six that once survived the suite, five it always caught.
"""

from __future__ import annotations

from .mutate import Mutant

TEXT_API = "tests/api/test_text.py"
FLOW_API = "tests/api/test_flow.py"
TILER = "tests/tasks/test_flow_tiler.py"
FILL_MASK_RUNNER = "tests/tasks/test_fill_mask_runner.py"
VIDEO = "tests/grpc/test_video.py"
PARITY = "tests/modeling/test_parity.py::test_float32_outputs_match_transformers"

MUTANTS: tuple[Mutant, ...] = (
    # -- survivors of the first mutation run (issue 20) ------------------------------------------
    Mutant(
        "fill-mask-decodes-the-byte-before", "tasks/text.py",
        "MaskedText(window_ids, [p - start + 1 for p in answered])", "MaskedText(window_ids, [p - start for p in answered])",
        (f"{TEXT_API}::test_fill_mask_spans_equal_direct_pipeline",),
    ),
    Mutant(
        "flow-frames-swapped", "tasks/flow.py",
        "off_loop(tiler.split, frame1, frame2)", "off_loop(tiler.split, frame2, frame1)",
        (f"{FLOW_API}::test_large_frames_equal_reference_tiling",),
    ),
    Mutant(
        "flow-frame-2-ignored", "tasks/flow.py",
        "off_loop(tiler.split, frame1, frame2)", "off_loop(tiler.split, frame1, frame1)",
        (f"{FLOW_API}::test_large_frames_equal_reference_tiling",),
    ),
    Mutant(
        "flow-head-scaled-by-1-over-1.04", "modeling/decoders.py",
        "return self.decoder(queries, latents) / self.rescale_factor",
        "return self.decoder(queries, latents) / (self.rescale_factor * 1.04)",
        (f"{PARITY}[PerceiverForOpticalFlow-safetensors]",),
    ),
    Mutant(
        "video-producer-never-cancelled", "tasks/video.py",
        "        for task in (reader, producer):\n            task.cancel()\n"
        "        await asyncio.gather(reader, producer, return_exceptions=True)",
        "        reader.cancel()\n        await asyncio.gather(reader, return_exceptions=True)",
        (f"{VIDEO}::test_cancelling_stops_decoding",),
    ),
    Mutant(
        "passed-deadline-reported-as-cancelled", "api/grpc/calls.py",
        'status = "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"',
        'status = "CANCELLED"',
        ("tests/grpc/test_service.py::test_a_passed_deadline_is_deadline_exceeded",),
    ),
    # -- caught from the start (issue 20) ---------------------------------------------------------
    Mutant(
        "deadline-check-removed", "engine/batcher.py",
        "elif now > item.deadline:", "elif False:",
        ("tests/engine/test_batcher.py::test_expired_items_are_never_computed",),
    ),
    Mutant(
        "expired-item-still-computed", "engine/batcher.py",
        "                expired.append(item)\n            else:\n                live.append(item)",
        "                expired.append(item)\n                live.append(item)\n            else:\n                live.append(item)",
        ("tests/engine/test_batcher.py::test_expired_items_are_never_computed",),
    ),
    Mutant(
        "text-attention-mask-dropped", "tasks/text.py",
        "skip the mask entirely\n        return ids.to(device), mask.to(device)",
        "skip the mask entirely\n        return ids.to(device), None",
        (f"{TEXT_API}::test_classify_many_texts_in_order",),
    ),
    Mutant(
        "flow-blend-weight-sign-flipped", "tasks/flow.py",
        "wy = np.minimum(np.arange(th) + 1, th - np.arange(th))",
        "wy = np.minimum(np.arange(th) + 1, np.arange(th) - th)",
        (f"{TILER}::test_weights_are_positive_symmetric_and_peak_in_the_middle",),
    ),
    Mutant(
        "grpc-drain-without-grace", "api/grpc/server.py",
        "            deadline = time.monotonic() + grace\n"
        "            while self.in_flight.count and time.monotonic() < deadline:\n"
        "                await asyncio.sleep(0.05)\n"
        "            self._stopping = asyncio.ensure_future(self.server.stop(max(deadline - time.monotonic(), 0.5)))",
        "            self._stopping = asyncio.ensure_future(self.server.stop(0))",
        ("tests/grpc/test_drain.py::test_stream_in_flight_finishes_when_the_server_drains",),
    ),
    # -- tiling and blending ----------------------------------------------------------------------
    Mutant(
        "tiles-not-flush-with-the-border", "tasks/flow.py",
        "starts = list(range(0, size - tile, tile - self.min_overlap)) + [size - tile]",
        "starts = list(range(0, size - tile, tile - self.min_overlap)) + [size - tile - 1]",
        (f"{TILER}::test_tiles_cover_the_frame_inside_its_border_with_the_overlap",),
    ),
    Mutant(
        "tile-overlap-ignored", "tasks/flow.py",
        "starts = list(range(0, size - tile, tile - self.min_overlap)) + [size - tile]",
        "starts = list(range(0, size - tile, tile)) + [size - tile]",
        (f"{TILER}::test_tiles_cover_the_frame_inside_its_border_with_the_overlap",),
    ),
    Mutant(
        "blend-weight-zero-at-the-edge", "tasks/flow.py",
        "wx = np.minimum(np.arange(tw) + 1, tw - np.arange(tw))",
        "wx = np.minimum(np.arange(tw), tw - np.arange(tw))",
        (f"{TILER}::test_weights_are_the_distance_to_the_tile_edge",),
    ),
    Mutant(
        "blend-divides-by-the-tile-count", "tasks/flow.py",
        "count[y:y + th, x:x + tw] += weights", "count[y:y + th, x:x + tw] += 1",
        (f"{TILER}::test_a_constant_field_survives_the_blend",),
    ),
    Mutant(
        "blend-crops-the-wrong-corner", "tasks/flow.py",
        "return (total / count)[:height, :width].astype(np.float32)",
        "return (total / count)[-height:, -width:].astype(np.float32)",
        (f"{TILER}::test_a_linear_ramp_survives_the_blend",),
    ),
    Mutant(
        "small-frames-padded-with-zeros", "tasks/flow.py",
        'mode="edge")', 'mode="constant")',
        (f"{TILER}::test_split_cuts_tiles_of_both_frames_in_order",),
    ),
    # -- flow scaling and patches -----------------------------------------------------------------
    Mutant(
        "flow-scale-not-applied", "tasks/flow.py",
        ".float() * self.options.flow_scale", ".float()",
        (f"{FLOW_API}::test_large_frames_equal_reference_tiling",),
    ),
    Mutant(
        "flow-patch-neighbourhood-transposed", "modeling/processing.py",
        ".permute(0, 4, 5, 1, 2, 3)", ".permute(0, 5, 4, 1, 2, 3)",
        ("tests/modeling/test_processing.py::test_flow_patches_follow_the_deepmind_layout",),
    ),
    # -- position encodings -----------------------------------------------------------------------
    Mutant(
        "fourier-frequencies-up-to-the-resolution", "modeling/position.py",
        "torch.linspace(1.0, res / 2, self.num_bands", "torch.linspace(1.0, res, self.num_bands",
        (f"{PARITY}[PerceiverForImageClassificationFourier-safetensors]",),
    ),
    Mutant(
        "fourier-grid-spans-0-to-1", "modeling/position.py",
        "torch.linspace(-1.0, 1.0, n,", "torch.linspace(0.0, 1.0, n,",
        (f"{PARITY}[PerceiverForImageClassificationFourier-safetensors]",),
    ),
    Mutant(
        "subsampled-points-placed-as-a-whole-grid", "modeling/position.py",
        "return -1 + 2 * coords / sizes", "return -1 + 2 * coords / (sizes - 1)",
        (f"{PARITY}[PerceiverForMultimodalAutoencoding-safetensors]",),
    ),
    # -- masks and padding ------------------------------------------------------------------------
    Mutant(
        "key-mask-inverted", "modeling/kernels.py",
        "mask = None if key_mask is None else key_mask[:, None, None, :]",
        "mask = None if key_mask is None else ~key_mask[:, None, None, :]",
        # Texts padded at the end skip the mask altogether (attention.py, packed inputs); other masks keep it.
        ("tests/modeling/test_cpu_kernels.py::test_other_masks_keep_the_masked_form",),
    ),
    Mutant(
        "per-head-attention-unscaled", "modeling/kernels.py",
        "    q = q * scale\n    for i in range(b):", "    for i in range(b):",
        ("tests/modeling/test_cpu_kernels.py::test_big_heads_are_computed_one_at_a_time_into_the_layout_the_output_projection_reads",),
    ),
    Mutant(
        "bf16-latent-products-skip-onednn", "modeling/kernels.py",
        "if (latent or rows >= ONEDNN_ROW_MULTIPLE) and not torch.compiler.is_compiling():", "if False:",
        ("tests/modeling/test_cpu_kernels.py::test_bf16_cpu_models_multiply_latents_through_onednn_with_packed_weights",),
    ),
    Mutant(
        "compiled-encoders-in-groups-of-four", "modeling/compiled.py",
        "    model.perceiver.encoder.group_for_compiling()\n", "",
        ("tests/modeling/test_cpu_kernels.py::test_compiled_encoders_keep_the_onednn_products",),
    ),
    Mutant(
        "learned-queries-remembered-across-parameter-changes", "modeling/cross_attention.py",
        "if memo is None or memo[0] is not base or not same_form(memo[1], form):", "if memo is None or memo[0] is not base:",
        ("tests/benchmarks/test_optimized_paths.py::test_queries_of_learned_arrays_are_computed_once_and_follow_changes",),
    ),
    Mutant(
        "packed-inputs-take-the-padding", "modeling/attention.py",
        "torch.cat([item[:n] for item, n in zip(inputs, lengths)])",
        "torch.cat([item[-n:] for item, n in zip(inputs, lengths)])",
        ("tests/modeling/test_decoding.py::test_unpadded_text_equals_padded_text",),
    ),
    Mutant(
        "padding-mask-one-short", "modeling/processing.py",
        "mask[row, : len(seq)] = 1", "mask[row, : len(seq) - 1] = 1",
        ("tests/modeling/test_processing.py::test_batch_padding_equals_perceiver_tokenizer",),
    ),
    Mutant(
        "fill-mask-padding-rows-kept", "tasks/text.py",
        "return [logits[i, : len(p.positions)] for i, p in enumerate(payloads)]",
        "return [logits[i] for i, p in enumerate(payloads)]",
        (f"{FILL_MASK_RUNNER}::test_each_item_gets_its_own_positions_in_order",),
    ),
    Mutant(
        "fill-mask-position-padding-first", "tasks/text.py",
        "p.positions + [p.positions[0]] * (longest - len(p.positions))",
        "[p.positions[0]] * (longest - len(p.positions)) + p.positions",
        (f"{FILL_MASK_RUNNER}::test_each_item_gets_its_own_positions_in_order",),
    ),
    # -- decode order, label and window mapping ---------------------------------------------------
    Mutant(
        "fill-mask-rows-in-reverse", "tasks/text.py",
        "for row, position in zip(probs, positions):", "for row, position in zip(probs[::-1], positions):",
        (f"{TEXT_API}::test_fill_mask_spans_equal_direct_pipeline",),
    ),
    Mutant(
        "top-k-worst-first", "tasks/common.py",
        "np.lexsort((candidates, -scores[candidates]))", "np.lexsort((candidates, scores[candidates]))",
        (f"{TEXT_API}::test_classify_one_text_equals_direct_pipeline",),
    ),
    Mutant(
        "labels-shifted-by-one", "tasks/common.py",
        "Prediction(labels[i], i, score)", "Prediction(labels[(i + 1) % len(labels)], i, score)",
        (f"{TEXT_API}::test_classify_one_text_equals_direct_pipeline",),
    ),
    Mutant(
        "every-window-numbered-0", "tasks/video.py",
        "decode_window(served, window, index, real, settings)", "decode_window(served, window, 0, real, settings)",
        (f"{VIDEO}::test_streamed_reconstruction_equals_whole_window_decode",),
    ),
    Mutant(
        "audio-chunk-start-in-patches", "tasks/video.py",
        'a0 * spp, out.get("audio")', 'a0, out.get("audio")',
        (f"{VIDEO}::test_streamed_reconstruction_equals_whole_window_decode",),
    ),
    # -- batching ---------------------------------------------------------------------------------
    Mutant(
        "video-batch-key-ignores-the-chunk-size", "tasks/video.py",
        'return ("decode", len(payload.image_points), len(payload.audio_points), payload.label)',
        'return ("decode", payload.label)',
        ("tests/tasks/test_video_runner.py::test_chunks_of_different_sizes_queued_together_each_get_their_own_decode",),
    ),
    Mutant(
        "out-of-memory-fails-the-batch-instead-of-splitting", "engine/batcher.py",
        "if is_out_of_memory(exc) and len(batch) > 1:", "if is_out_of_memory(exc) and len(batch) > 1 and False:",
        ("tests/engine/test_batcher.py::test_out_of_memory_splits_the_batch_and_retries",),
    ),
    Mutant(
        "an-instance-takes-every-waiting-item", "engine/batcher.py",
        "batch = compatible[: max(1, min(share, limits.max_batch_size))]", "batch = compatible[: limits.max_batch_size]",
        ("tests/engine/test_batcher.py::test_a_burst_is_split_evenly_between_idle_instances",
         "tests/engine/test_batcher.py::test_a_free_instance_leaves_its_busy_peer_a_share_of_what_waits"),
    ),
    Mutant(
        "batches-run-in-the-server-process", "engine/batcher.py",
        "results = list(executor.run([item.payload for item in batch]))",
        "results = list(self.runner.run([item.payload for item in batch]))",
        ("tests/engine/test_worker_process.py::test_the_batcher_splits_a_batch_its_worker_process_had_no_memory_for",
         "tests/engine/test_instances.py::test_a_model_in_worker_processes_answers_as_in_threads"),
    ),
    Mutant(
        "a-dead-worker-process-is-not-restarted", "engine/worker_process.py",
        "if self._process is None or self._process.poll() is not None:", "if self._process is None:",
        ("tests/engine/test_worker_process.py::test_a_worker_that_dies_fails_its_batch_and_the_next_batch_starts_another",),
    ),
    Mutant(
        "instances-share-the-process-torch-threads", "engine/batcher.py",
        "use_torch_threads(self.threads)  # this thread's own", "pass  # this thread's own",
        ("tests/engine/test_batcher.py::test_each_instance_runs_its_batches_on_its_own_torch_threads",),
    ),
    Mutant(
        "bf16-products-of-input-rows-through-f-linear", "modeling/kernels.py",
        "if (latent or rows >= ONEDNN_ROW_MULTIPLE) and not torch.compiler.is_compiling():",
        "if latent and not torch.compiler.is_compiling():",
        ("tests/modeling/test_cpu_kernels.py::test_bf16_products_of_any_row_count_meet_a_few_shapes",),
    ),
    Mutant(
        "fp16-products-of-input-rows-through-f-linear-whole", "modeling/kernels.py",
        "return _onednn_product(x, weight, bias, 0, lambda chunk: F.linear(chunk, weight, bias))",
        "return F.linear(x, weight, bias)",
        ("tests/modeling/test_cpu_kernels.py::test_fp16_products_of_any_row_count_meet_a_few_shapes",),
    ),
    Mutant(
        "decompressed-bytes-not-counted", "api/middleware.py",
        'seen += len(message.get("body", b""))', 'seen += 0 if decoder is not None else len(message.get("body", b""))',
        ("tests/api/test_oip.py::test_a_compression_bomb_stops_at_the_body_limit",),
    ),
    Mutant(
        "tiff-tile-size-unchecked", "media/image.py",
        "if width * length > limits.max_image_pixels:", "if False:",
        ("tests/media/test_image.py::test_tiff_tiles_beyond_the_pixel_limit_are_refused_from_the_header",),
    ),
    Mutant(
        "v2-http-infer-outlives-its-client", "api/oip/rest.py",
        "answer = await until_disconnect(request, v2.infer(state(request), call))",
        "answer = await v2.infer(state(request), call)",
        ("tests/reliability/test_faults.py::test_a_rest_client_that_disconnects_frees_its_queued_work",),
    ),
    Mutant(
        "cancelled-at-shutdown-is-a-bare-500", "api/middleware.py",
        "            except asyncio.CancelledError:\n", "            except ZeroDivisionError:\n",
        ("tests/reliability/test_drain.py::test_a_request_still_running_when_the_grace_period_ends_gets_a_clean_refusal",),
    ),
    Mutant(
        "exit-tears-down-under-a-computing-batch", "server.py",
        "        if running:\n", "        if False:\n",
        ("tests/reliability/test_drain.py::test_a_request_still_running_when_the_grace_period_ends_gets_a_clean_refusal",),
    ),
    Mutant(
        "attention-compute-dtype-ignored", "modeling/kernels.py",
        "if (compute_dtype is not None and compute_dtype != q.dtype and not q.requires_grad",
        "if (False and compute_dtype != q.dtype and not q.requires_grad",
        ("tests/modeling/test_cpu_kernels.py::test_attention_in_a_compute_dtype_covers_big_heads_only",
         "tests/modeling/test_precision.py::test_int8_attention_is_computed_in_bf16_where_that_pays"),
    ),
    Mutant(
        "big-decodes-take-turns-on-every-preprocessing-thread", "tasks/common.py",
        "if opened.decoded_bytes < HAND_BACK_FROM_BYTES:", "if True:",
        # The memory tests kill it only as often as the pool's threads happen to pick up the decodes
        # in turn (a CI run once saw the growth stay under the bound); the unit test checks the thread.
        ("tests/tasks/test_decode_in_budget.py::test_big_decodes_take_turns_on_one_thread_even_where_the_budget_admits_several",
         "tests/reliability/test_decode_memory.py::test_sixteen_big_frames_in_one_message_peak_like_one",
         "tests/reliability/test_decode_memory.py::test_concurrent_big_images_stay_within_the_budget"),
    ),
    Mutant(
        "onednn-int8-products-unpadded", "modeling/chunking.py",
        "size = -(-max(n, 1) // multiple) * multiple", "size = n",
        ("tests/modeling/test_precision.py::test_onednn_int8_products_meet_few_shapes",),
    ),
    Mutant(
        "libgomp-spins-as-long-as-it-likes", "cli.py",
        "limit_spinning(settings.omp_spin_count)  # before torch loads libgomp, which reads it once", "pass",
        ("tests/server/test_process.py::test_the_server_sets_the_spin_count_before_torch_loads_libgomp",),
    ),
    Mutant(
        "gathering-worker-woken-by-every-request", "engine/batcher.py",
        "self._wake_at_depth = len(self._queue) + target - len(compatible)", "self._wake_at_depth = 0",
        ("tests/engine/test_batcher.py::test_a_worker_gathering_a_batch_is_woken_once_it_can_be_full_not_per_request",),
    ),
    Mutant(
        "batch-answers-sent-one-wake-up-each", "engine/batcher.py",
        "by_loop.setdefault(item.loop, []).append((item.future, outcome))",
        "item.loop.call_soon_threadsafe(_settle, item.future, outcome)",
        ("tests/engine/test_batcher.py::test_a_batch_reaches_its_event_loop_in_one_wake_up",),
    ),
    Mutant(
        "idle-workers-keep-their-openmp-team", "engine/batcher.py",
        'self._renew_when_idle = torch.device(device).type == "cpu" and self.threads > 1 and executors is None',
        "self._renew_when_idle = False",
        ("tests/engine/test_threads.py::test_import_and_idle_models_leave_no_openmp_team",),
    ),
    Mutant(
        "kernel-probes-on-the-importing-thread", "modeling/kernels.py",
        "ONEDNN_LINEAR = on_own_thread(_onednn_linear_works)", "ONEDNN_LINEAR = _onednn_linear_works()",
        ("tests/engine/test_threads.py::test_import_and_idle_models_leave_no_openmp_team",),
    ),
    Mutant(
        "answered-clients-not-waited-for", "engine/batcher.py",
        "if not answered or self.instances > 1:", "if True:",
        ("tests/engine/test_batcher.py::test_closed_loop_clients_come_together_in_one_batch",),
    ),
    Mutant(
        "threads-take-glibcs-eight-arenas-per-core", "allocator.py",
        "limit_arenas(default_arenas() if arenas is None else arenas)", "limit_arenas(arenas or 0)",
        ("tests/server/test_process.py::test_the_server_limits_its_threads_to_a_few_heaps",),
    ),
    Mutant(
        "bf16-attention-of-unequal-widths-never-fused", "modeling/kernels.py",
        "(_fused_bf16(q) or scores > FUSED_SCORES_THRESHOLD", "(scores > FUSED_SCORES_THRESHOLD",
        ("tests/modeling/test_cpu_kernels.py::test_bf16_attention_of_unequal_widths_takes_the_fused_kernel_where_the_cpu_has_amx",),
    ),
    Mutant(
        "residual-of-an-unfused-product-dropped", "modeling/kernels.py",
        "        return linear(x, weight, bias, onednn_max_rows=onednn_max_rows, activation=activation) + residual",
        "        return linear(x, weight, bias, onednn_max_rows=onednn_max_rows, activation=activation)",
        ("tests/modeling/test_cpu_kernels.py::test_residuals_are_added_by_onednns_op_in_bf16_latent_products",),
    ),
    Mutant(
        "bf16-latent-residuals-added-after-the-product", "modeling/kernels.py",
        "if activation is None and _fuses_residual(residual, x, weight, onednn_max_rows):", "if False:",
        # bf16 cases only: where bf16 is not native they skip and the mutant is not judged (the float32
        # case passes either way, float32 products never fuse).
        ("tests/modeling/test_cpu_kernels.py::test_residuals_are_added_by_onednns_op_in_bf16_latent_products[bfloat16]",
         "tests/modeling/test_cpu_kernels.py::test_bf16_latent_layers_add_both_residuals_in_their_products"),
    ),
    Mutant(
        "big-float32-heads-of-unequal-widths-padded-for-sdpa", "modeling/kernels.py",
        "scores > FUSED_SCORES_THRESHOLD and not _big_heads_unfused(q, k, v, mask))",
        "scores > FUSED_SCORES_THRESHOLD)",
        ("tests/modeling/test_cpu_kernels.py::test_big_float32_heads_of_unequal_widths_stay_unpadded_and_hold_a_bounded_number_of_scores",),
    ),
    Mutant(
        "big-heads-hold-all-their-scores-at-once", "modeling/kernels.py",
        "rows = max(1, min(n, FUSED_SCORES_THRESHOLD // k.shape[2]))", "rows = n",
        ("tests/modeling/test_cpu_kernels.py::test_big_float32_heads_of_unequal_widths_stay_unpadded_and_hold_a_bounded_number_of_scores",),
    ),
    Mutant(
        "mkl-one-item-products-never-taken", "modeling/kernels.py",
        "x.numel() == mkl.rows * x.shape[-1] and", "x.numel() == mkl.rows and",
        ("tests/modeling/test_cpu_kernels.py::test_float32_latent_layers_multiply_one_item_through_mkls_packed_sgemm",),
    ),
    Mutant(
        "mkl-products-not-padded-to-the-packed-rows", "modeling/kernels.py",
        "in_row_chunks(flat, rows, rows, lambda", "in_row_chunks(flat, rows, 1, lambda",
        ("tests/modeling/test_cpu_kernels.py::test_mkl_products_of_any_row_count_run_in_chunks_of_the_rows_packed_for",),
    ),
    Mutant(
        "own-mappings-never-restore-the-threshold", "allocator.py",
        "        mallopt(_M_MMAP_THRESHOLD, previous)\n", "        pass\n",
        ("tests/server/test_process.py::test_own_mappings_map_big_buffers_apart_and_then_restore_the_threshold",),
    ),
    Mutant(
        "packed-latent-stacks-keep-groups-of-four", "modeling/attention.py",
        "            self._group(packed_group_items(self.num_latents))\n", "            pass\n",
        ("tests/modeling/test_cpu_kernels.py::test_a_big_batch_matches_transformers_and_reaches_onednn_only_at_small_batch_shapes",),
    ),
    Mutant(
        "int8-output-layer-folded-into-float32", "modeling/cross_attention.py",
        "(int8_of(weight) is not None and INT8_GAIN * out >= width)", "False",
        ("tests/modeling/test_precision.py::test_int8_mlm_quantizes_its_output_layer",),
    ),
    Mutant(
        "body-cut-off-by-the-client-is-a-500", "api/errors.py",
        "@app.exception_handler(ClientDisconnect)", "@app.exception_handler(ConnectionAbortedError)",
        ("tests/reliability/test_faults.py::test_a_client_that_goes_while_sending_its_body_is_a_499_not_a_500",),
    ),
    Mutant(
        "quiet-stream-waited-for-forever", "api/grpc/video.py",
        "async with _idle_bound(idle_s, \"the stream sent nothing\"", "async with _idle_bound(None, \"the stream sent nothing\"",
        ("tests/grpc/test_video.py::test_a_stream_that_goes_quiet_is_ended_and_lets_its_model_go",),
    ),
    Mutant(
        "failed-items-counted-as-answered", "engine/batcher.py",
        "self.statistics.failed([i.enqueued for i in batch], time.monotonic())",
        "self.statistics.passed([0.0] * len(batch), 0.0)",
        ("tests/engine/test_batcher.py::test_statistics_count_items_passes_and_failures_as_triton_reports_them",),
    ),
    Mutant(
        "config-dims-without-the-batch-dimension", "api/oip/infer.py",
        '"dims": _dims(spec, served)}', '"dims": _dims(spec, served)[1:]}',
        ("tests/api/test_oip.py::test_model_config_matches_the_metadata_and_the_batching",),
    ),
    Mutant(
        "stalled-reader-held-forever", "api/grpc/video.py",
        "async with _idle_bound(idle_s, \"the client read nothing\"", "async with _idle_bound(None, \"the client read nothing\"",
        ("tests/grpc/test_video.py::test_a_client_that_stops_reading_is_ended_and_lets_its_model_go",),
    ),
    Mutant(
        "mask-span-cuts-a-character", "tasks/text.py",
        "        if cut is not None:\n            raise InvalidInput(f\"mask_spans", "        if False:\n            raise InvalidInput(f\"mask_spans",
        (f"{TEXT_API}::test_fill_mask_spans_keep_characters_whole",),
    ),
    Mutant(
        "unknown-query-parameters-dropped", "api/rest.py",
        "_known_once([name for name, _ in request.query_params.multi_items()], set(_query_fields(task)), \"query parameter\")",
        "_known_once([], set(_query_fields(task)), \"query parameter\")",
        ("tests/api/test_openapi.py::test_undocumented_or_repeated_query_parameters_are_refused",),
    ),
    Mutant(
        "stalled-body-waited-for-forever", "api/middleware.py",
        "async with asyncio.timeout(timeout_s):", "async with asyncio.timeout(None):",
        ("tests/reliability/test_faults.py::test_a_body_that_stalls_is_refused_with_408_and_a_slow_but_steady_one_is_read",),
    ),
)
