package org.edgeclip.demo

import android.content.Context
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import java.io.File
import java.io.FileNotFoundException
import org.edgeclip.core.ClipTokenizer
import org.edgeclip.core.ExportFolder
import org.edgeclip.core.ImagePreprocessor
import org.edgeclip.core.Manifest
import org.edgeclip.core.RgbImage
import org.edgeclip.core.ZeroShot
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

/**
 * One exported tower (`model.pte`, lowered to XNNPACK) loaded into ExecuTorch. The manifest gives
 * the input's fixed shape; the output is the L2-normalised embedding.
 */
class PteTower(towerDir: File, val manifest: Manifest, threads: Int = 0) : AutoCloseable {
    private val shape: LongArray = manifest.inputs[0].shape
    private val module: Module

    init {
        require(manifest.file.endsWith(".pte")) {
            "${manifest.tower} tower: ${manifest.file} is not an ExecuTorch program (target ${manifest.target})"
        }
        // threads = 0: ExecuTorch picks its default. loadMethod now, so the first forward() is
        // an inference only and load time is measured as load time.
        module = Module.load(manifest.modelFile(towerDir).absolutePath, Module.LOAD_MODE_FILE, threads)
        module.loadMethod("forward")
    }

    /** The image tower: a preprocessed NCHW float32 image. */
    fun embed(nchw: FloatArray): FloatArray = run(Tensor.fromBlob(nchw, shape))

    /** The text tower: token ids, int64 as the manifest says for ExecuTorch. */
    fun embed(tokens: LongArray): FloatArray = run(Tensor.fromBlob(tokens, shape))

    private fun run(input: Tensor): FloatArray =
        module.forward(EValue.from(input))[0].toTensor().dataAsFloatArray

    override fun close() = module.destroy()
}

/** An export folder's two towers, its tokenizer and its image preprocessing, ready to run. */
class ClipEngine private constructor(
    val dir: File,
    val folder: ExportFolder,
    val image: PteTower,
    val text: PteTower,
    val tokenizer: ClipTokenizer,
    val preprocessor: ImagePreprocessor,
) : AutoCloseable {

    val logitScale: Double get() = folder.logitScale()

    val textEncoder = ZeroShot.TextEncoder { tokens -> text.embed(tokens) }

    fun embedImage(bitmap: Bitmap): FloatArray = image.embed(preprocessor.preprocess(rgb(bitmap)))

    fun embedText(caption: String): FloatArray = text.embed(tokenizer.tokenize(caption))

    override fun close() {
        image.close()
        text.close()
    }

    companion object {
        /** Opens [dir] through the core (manifest versions, sha256 of both models), then loads both towers. */
        fun open(dir: File, threads: Int = 0): ClipEngine {
            val folder = ExportFolder.open(dir)
            val image = PteTower(folder.imageDir(), folder.image, threads)
            val text = try {
                PteTower(folder.textDir(), folder.text, threads)
            } catch (e: Throwable) {
                image.close()
                throw e
            }
            return ClipEngine(dir, folder, image, text, folder.tokenizer(), folder.preprocessor())
        }

        /** A bitmap's pixels as the core's RGB image (ARGB from getPixels; alpha is dropped). */
        fun rgb(bitmap: Bitmap): RgbImage {
            val w = bitmap.width
            val h = bitmap.height
            val argb = IntArray(w * h)
            bitmap.getPixels(argb, 0, w, 0, 0, w, h)
            return RgbImage.fromArgb(w, h, argb)
        }

        /** Decodes an image file at full size, untouched (golden.png must reach the core pixel-exact). */
        fun decodeExact(file: File): Bitmap {
            val options = BitmapFactory.Options().apply {
                inPreferredConfig = Bitmap.Config.ARGB_8888
                inScaled = false
            }
            return BitmapFactory.decodeFile(file.absolutePath, options)
                ?: throw IllegalArgumentException("cannot decode ${file.absolutePath}")
        }
    }
}

/** Where export folders are: bundled in the APK's assets, or pushed to the external files folder. */
object Exports {
    private const val ASSETS = "export"

    /** Every export folder the app can see, bundled ones first. */
    fun list(context: Context): List<File> {
        val roots = listOfNotNull(copyBundled(context), context.getExternalFilesDir(null))
        return roots.flatMap { root ->
            listOf(root) + (root.listFiles()?.filter { it.isDirectory }?.sortedBy { it.name } ?: emptyList())
        }.filter(::isExport)
    }

    fun isExport(dir: File): Boolean =
        File(dir, "image/manifest.json").isFile && File(dir, "text/manifest.json").isFile

    /** An absolute path, or the name of a folder that [list] finds (e.g. "executorch-int8"). */
    fun resolve(context: Context, name: String): File {
        val file = File(name)
        if (file.isAbsolute) return file
        return list(context).firstOrNull { it.name == name }
            ?: File(context.getExternalFilesDir(null), name)
    }

    /** Copies assets/export/ into filesDir/export/ once per install or update of the APK. */
    @Suppress("DEPRECATION") // getPackageInfo(String, Int): the flags overload is API 33+
    fun copyBundled(context: Context): File {
        val dest = File(context.filesDir, ASSETS)
        val stamp = context.packageManager.getPackageInfo(context.packageName, 0).lastUpdateTime.toString()
        val marker = File(dest, ".copied")
        if (marker.isFile && marker.readText() == stamp) return dest
        dest.deleteRecursively()
        copyAsset(context, ASSETS, dest)
        dest.mkdirs()
        marker.writeText(stamp)
        return dest
    }

    private fun copyAsset(context: Context, path: String, dest: File) {
        val children = context.assets.list(path) ?: emptyArray()
        if (children.isNotEmpty()) {
            dest.mkdirs()
            for (child in children) copyAsset(context, "$path/$child", File(dest, child))
            return
        }
        try { // a file, or else an empty folder (which open() refuses)
            context.assets.open(path).use { input ->
                dest.parentFile?.mkdirs()
                dest.outputStream().use { input.copyTo(it) }
            }
        } catch (e: FileNotFoundException) {
            dest.mkdirs()
        }
    }

    /** Writes [text] to [file] so that a reader sees the old file or the new one, never half. */
    fun writeAtomically(file: File, text: String) {
        file.parentFile?.mkdirs()
        val tmp = File(file.parentFile, ".${file.name}.tmp")
        tmp.writeText(text)
        if (!tmp.renameTo(file)) {
            tmp.delete()
            throw java.io.IOException("cannot rename $tmp to $file")
        }
    }
}
