package org.edgeclip.demo

import android.app.Activity
import android.graphics.Bitmap
import android.graphics.Color
import android.os.Build
import android.os.Bundle
import android.os.SystemClock
import android.util.Log
import android.view.WindowManager
import android.widget.TextView
import java.io.File
import org.edgeclip.core.BenchmarkRecord
import org.edgeclip.core.ClipTokenizer
import org.edgeclip.core.ExportFolder
import org.edgeclip.core.ImagePreprocessor
import org.edgeclip.core.JsonWriter
import org.edgeclip.core.Manifest

/**
 * The benchmark mode, started from adb (README), in one of two forms:
 *
 *     adb shell am start -W -n org.edgeclip.demo/.BenchmarkActivity \
 *         --es export executorch-int8 --ei runs 50 --ei warmup 5 [--ei threads 4]
 *
 * times both towers of an export folder and writes one profile record per tower to
 * <external files>/profile/<tower>.json, then profile/done.json;
 *
 *     adb shell am start -W -n org.edgeclip.demo/.BenchmarkActivity \
 *         --es tower_dir DIR --es out FILE --ei runs 50 --ei warmup 5 [--ei threads 4]
 *
 * times one tower folder and writes its record to FILE, or the reason it could not to
 * FILE.error (one line): what `edgeclip profile EXPORT --device adb -o app=org.edgeclip.demo`
 * runs (export/profile/adb.py). Per tower: load (Module.load + loadMethod), one first
 * inference, `warmup` untimed runs, `runs` timed runs; every file is written aside and renamed
 * into place; then the activity finishes.
 */
class BenchmarkActivity : Activity() {

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        window.addFlags(WindowManager.LayoutParams.FLAG_KEEP_SCREEN_ON)
        val status = TextView(this).apply { setPadding(32, 32, 32, 32); text = "edgeclip benchmark…" }
        setContentView(status)
        if (savedInstanceState != null) return // recreated: the first instance is running it

        val runs = intent.getIntExtra("runs", 50)
        val warmup = intent.getIntExtra("warmup", 5)
        val threads = intent.getIntExtra("threads", 0) // 0: ExecuTorch's default
        val progress = { line: String -> runOnUiThread { status.text = line } }
        val towerDir = intent.getStringExtra("tower_dir")
        val job = if (towerDir != null) {
            { oneTower(File(towerDir), intent.getStringExtra("out"), runs, warmup, threads, progress) }
        } else {
            { wholeExport(intent.getStringExtra("export"), runs, warmup, threads, progress) }
        }
        Thread {
            job()
            runOnUiThread { finish() }
        }.start()
    }

    /** `--es export NAME`: both towers, records in profile/, then profile/done.json. */
    private fun wholeExport(export: String?, runs: Int, warmup: Int, threads: Int, progress: (String) -> Unit) {
        val outDir = File(getExternalFilesDir(null), "profile")
        val done = File(outDir, "done.json")
        done.delete()
        val result = linkedMapOf<String, Any?>("export" to export, "runs" to runs, "warmup" to warmup)
        try {
            require(!export.isNullOrEmpty()) { "pass the export folder: --es export NAME" }
            require(runs >= 1 && warmup >= 0) { "runs must be >= 1 and warmup >= 0" }
            val dir = Exports.resolve(this, export!!)
            val folder = ExportFolder.open(dir) // manifests and sha256 of both models
            val image = folder.preprocessor().preprocess(ClipEngine.rgb(benchmarkPicture(dir)))
            val tokens = folder.tokenizer().tokenize(BENCHMARK_CAPTION)
            val written = mutableListOf<File>()
            for ((towerDir, manifest) in listOf(folder.imageDir() to folder.image, folder.textDir() to folder.text)) {
                val record = measure(towerDir, manifest, dir.name, image, tokens, runs, warmup, threads, progress)
                val file = File(outDir, "${manifest.tower}.json")
                outDir.mkdirs()
                record.write(file) // temporary file, then an atomic rename
                written += file
                Log.i(TAG, "${manifest.tower}: p50 ${record.latency.p50} ms -> $file")
            }
            result["ok"] = true
            result["records"] = written.map { it.absolutePath }
        } catch (e: Throwable) {
            Log.e(TAG, "benchmark failed", e)
            result["ok"] = false
            result["error"] = e.toString()
        }
        Exports.writeAtomically(done, JsonWriter.write(result) + "\n")
        Log.i(TAG, "done: $done")
    }

    /** `--es tower_dir DIR --es out FILE`: one tower folder, its record at FILE (or FILE.error). */
    private fun oneTower(dir: File, out: String?, runs: Int, warmup: Int, threads: Int, progress: (String) -> Unit) {
        if (out.isNullOrEmpty()) {
            Log.e(TAG, "pass where the record goes: --es out FILE")
            return
        }
        val file = File(out)
        try {
            require(runs >= 1 && warmup >= 0) { "runs must be >= 1 and warmup >= 0" }
            val manifest = Manifest.read(dir) // refuses a manifest_version this app does not know
            manifest.verifyModelFile(dir)
            val image = if (manifest.tower == "image") {
                ImagePreprocessor(manifest.preprocessing).preprocess(ClipEngine.rgb(grey()))
            } else null
            val tokens = if (manifest.tower == "text") {
                ClipTokenizer.fromManifest(manifest, dir).tokenize(BENCHMARK_CAPTION)
            } else null
            // the artifact's name: the export folder above the tower folder ("executorch-int8")
            val artifact = dir.name.substringBeforeLast("-${manifest.tower}")
            measure(dir, manifest, artifact, image, tokens, runs, warmup, threads, progress).write(file)
            Log.i(TAG, "${manifest.tower}: -> $file")
        } catch (e: Throwable) {
            Log.e(TAG, "benchmark failed", e)
            Exports.writeAtomically(File("$out.error"), (e.message ?: e.toString()).lines().first() + "\n")
        }
    }

    companion object {
        private const val TAG = "edgeclip"
        private const val BENCHMARK_CAPTION = "a photo of a dog."

        /** Times one tower: load, first inference, warm-up, timed runs; its profile record. */
        fun measure(
            towerDir: File, manifest: Manifest, artifact: String, image: FloatArray?, tokens: LongArray?,
            runs: Int, warmup: Int, threads: Int, progress: (String) -> Unit,
        ): BenchmarkRecord {
            progress("${manifest.tower}: loading")
            var t0 = SystemClock.elapsedRealtimeNanos()
            val tower = PteTower(towerDir, manifest, threads)
            val loadMs = msSince(t0)
            try {
                val run = { if (manifest.tower == "image") tower.embed(image!!) else tower.embed(tokens!!) }
                t0 = SystemClock.elapsedRealtimeNanos()
                run()
                val firstMs = msSince(t0)
                progress("${manifest.tower}: $warmup warm-up runs")
                repeat(warmup) { run() }
                progress("${manifest.tower}: $runs timed runs")
                val times = DoubleArray(runs) {
                    val start = SystemClock.elapsedRealtimeNanos()
                    run()
                    msSince(start)
                }
                val record = BenchmarkRecord(manifest, artifact, "executorch ${BuildConfig.EXECUTORCH_VERSION} (Android AAR)",
                    computeUnit(manifest), warmup, times)
                record.loadMs = loadMs
                record.firstInferenceMs = firstMs
                record.threads = if (threads > 0) threads else null
                record.peakRssMb = peakRssMb()
                record.device = deviceFacts()
                record.environment = linkedMapOf(
                    "app" to "org.edgeclip.demo ${BuildConfig.VERSION_NAME}",
                    "executorch_aar" to BuildConfig.EXECUTORCH_VERSION,
                    "exported_with" to (manifest.raw["libraries"] as? Map<*, *>)?.get("executorch"),
                    "load_mode" to "LOAD_MODE_FILE",
                )
                return record
            } finally {
                tower.close()
            }
        }

        private fun grey(): Bitmap =
            Bitmap.createBitmap(256, 256, Bitmap.Config.ARGB_8888).apply { eraseColor(Color.GRAY) }

        /** golden.png when the export has one (a real picture), else a mid-grey one. */
        private fun benchmarkPicture(dir: File): Bitmap {
            val golden = File(dir, "golden.png")
            return if (golden.isFile) ClipEngine.decodeExact(golden) else grey()
        }

        private fun computeUnit(manifest: Manifest): String =
            ((manifest.raw["format"] as? Map<*, *>)?.get("delegate") as? String) ?: "xnnpack"

        private fun msSince(startNanos: Long): Double = (SystemClock.elapsedRealtimeNanos() - startNanos) / 1e6

        /** The process's peak resident memory so far (VmHWM), in MB; null where unreadable. */
        private fun peakRssMb(): Double? = try {
            File("/proc/self/status").readLines().firstOrNull { it.startsWith("VmHWM:") }
                ?.split(Regex("\\s+"))?.get(1)?.toDouble()?.div(1024.0)
        } catch (e: Exception) {
            null
        }

        /** What the phone is, with the keys edgeclip's adb device uses (export/profile/adb.py). */
        fun deviceFacts(): MutableMap<String, Any?> = linkedMapOf(
            "kind" to "android-app",
            "model" to "${Build.MANUFACTURER} ${Build.MODEL}",
            "soc" to if (Build.VERSION.SDK_INT >= 31) "${Build.SOC_MANUFACTURER} ${Build.SOC_MODEL}" else Build.HARDWARE,
            "os" to "Android ${Build.VERSION.RELEASE} (API ${Build.VERSION.SDK_INT})",
            "abi" to Build.SUPPORTED_ABIS.firstOrNull(),
            "cores" to Runtime.getRuntime().availableProcessors(),
        )
    }
}
